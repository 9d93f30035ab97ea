//! `nb-proxy crowdsec check`: asks the LAPI once, as the bouncer would (same URL, key, TLS
//! settings and User-Agent), whether it accepts the key, and optionally what it holds against
//! one address. The LAPI records the bouncer's type and version from that request, so
//! `cscli bouncers list` shows `crowdsec-nb-proxy-bouncer` rather than whatever checked the key.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::client::{LapiClient, LapiConfig, LapiDecision, LapiError, USER_AGENT};
use super::duration::parse_go_duration;

/// Why the check failed, with the LAPI's address (never the key).
#[derive(Debug, thiserror::Error)]
#[error("the LAPI at {url}: {source}")]
pub struct CheckError {
    url: String,
    #[source]
    source: LapiError,
}

/// What the check prints on success: that the key is accepted and, with an address, the
/// decisions covering it.
pub async fn run(cfg: LapiConfig, ip: Option<IpAddr>) -> Result<String, CheckError> {
    let url = cfg.url.to_string();
    let failed = |source| CheckError {
        url: url.clone(),
        source,
    };
    let client = LapiClient::new(cfg).map_err(failed)?;
    // Without an address, one the LAPI answers about cheaply; the answer is not shown.
    let probe = ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let decisions = client.decisions_for(probe).await.map_err(failed)?;
    let (kind, version) = USER_AGENT.split_once('/').unwrap_or((USER_AGENT, ""));
    let mut out = format!(
        "the LAPI at {url} accepts the bouncer key; `cscli bouncers list` shows it as {kind} {version}\n"
    );
    if let Some(ip) = ip {
        out.push_str(&describe(ip, &decisions));
    }
    Ok(out)
}

/// One line per decision covering `ip`, in the operator's words.
fn describe(ip: IpAddr, decisions: &[LapiDecision]) -> String {
    if decisions.is_empty() {
        return format!("{ip}: no active decision\n");
    }
    let mut out = String::new();
    for d in decisions {
        let left = parse_go_duration(&d.duration)
            .filter(|secs| *secs >= 0.0)
            .map(|secs| humantime::format_duration(Duration::from_secs(secs as u64)).to_string())
            .unwrap_or_else(|| d.duration.clone());
        let _ = write!(
            out,
            "{ip}: {} ({} {}) from {}",
            d.kind, d.scope, d.value, d.origin
        );
        if !d.scenario.is_empty() {
            let _ = write!(out, ", scenario {:?}", d.scenario);
        }
        let _ = writeln!(out, ", {left} left");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(kind: &str, value: &str, duration: &str) -> LapiDecision {
        LapiDecision {
            origin: "cscli".into(),
            kind: kind.into(),
            scope: "Ip".into(),
            value: value.into(),
            duration: duration.into(),
            scenario: "manual 'ban' from 'localhost'".into(),
        }
    }

    #[test]
    fn decisions_are_described_with_their_time_left() {
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        assert_eq!(describe(ip, &[]), "127.0.0.9: no active decision\n");
        let said = describe(ip, &[decision("ban", "127.0.0.9", "4m59.5s")]);
        assert_eq!(
            said,
            "127.0.0.9: ban (Ip 127.0.0.9) from cscli, scenario \"manual 'ban' from 'localhost'\", 4m 59s left\n"
        );
        // A duration the parser does not know is shown as the LAPI gave it.
        let odd = describe(ip, &[decision("captcha", "127.0.0.0/8", "soon")]);
        assert!(odd.ends_with(", soon left\n"), "{odd}");
    }
}
