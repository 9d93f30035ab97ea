//! The AppSec layer's decision, pure: what the component answered (or that it could not be
//! asked), the service's mode and its fail-open switch ⇒ the verdict.

use super::Verdict;
use nb_api::AppSecMode;

/// What the AppSec component said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppSecAnswer {
    Allow,
    Block,
    /// Not configured, unreachable, too slow, key refused, or an unexpected answer.
    Unavailable,
}

/// The layer's outcome: the verdict that applies, and what AppSec said when it was not a plain
/// allow (for the access log, in enforce and observe alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppSecOutcome {
    pub verdict: Verdict,
    pub flagged: Option<Verdict>,
}

pub fn appsec_outcome(mode: AppSecMode, fail_open: bool, answer: AppSecAnswer) -> AppSecOutcome {
    let would = match answer {
        AppSecAnswer::Allow => {
            return AppSecOutcome {
                verdict: Verdict::Allow,
                flagged: None,
            }
        }
        AppSecAnswer::Block => Verdict::AppsecBlock,
        AppSecAnswer::Unavailable => Verdict::AppsecUnavailable,
    };
    let verdict = match (mode, would) {
        (AppSecMode::Enforce, Verdict::AppsecUnavailable) if fail_open => Verdict::Allow,
        (AppSecMode::Enforce, v) => v,
        _ => Verdict::Allow,
    };
    AppSecOutcome {
        verdict,
        flagged: Some(would),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_and_fail_open_decide() {
        use AppSecAnswer::*;
        use AppSecMode::*;
        let v = |mode, open, a| {
            let o = appsec_outcome(mode, open, a);
            (o.verdict, o.flagged)
        };
        assert_eq!(v(Enforce, false, Allow), (Verdict::Allow, None));
        assert_eq!(
            v(Enforce, false, Block),
            (Verdict::AppsecBlock, Some(Verdict::AppsecBlock))
        );
        assert_eq!(
            v(Enforce, true, Block),
            (Verdict::AppsecBlock, Some(Verdict::AppsecBlock)),
            "fail-open is about outages, not blocks"
        );
        assert_eq!(
            v(Enforce, false, Unavailable),
            (Verdict::AppsecUnavailable, Some(Verdict::AppsecUnavailable)),
            "fails closed by default"
        );
        assert_eq!(
            v(Enforce, true, Unavailable),
            (Verdict::Allow, Some(Verdict::AppsecUnavailable))
        );
        assert_eq!(
            v(Observe, false, Block),
            (Verdict::Allow, Some(Verdict::AppsecBlock)),
            "observe never denies"
        );
    }
}
