//! The background task: obtains a certificate for each wanted host set (from the cache when
//! it holds one that is not due), renews each when it is due, and retries failures with
//! backoff while the certificate already served, if any, stays in use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::Account;

use super::cache;
use super::order::{self, OrderError};
use super::Acme;

/// The longest the task sleeps: a clock jump or a long suspend is noticed within this.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// After `failures` failed attempts in a row: about 8 s, 16 s, 32 s, … up to an hour (a CA
/// limits failed validations per host: Let's Encrypt allows 5 an hour).
fn retry_delay(failures: u32) -> Duration {
    crate::backoff::backoff(failures + 3, MAX_SLEEP)
}

/// When a host set is next looked at, and how many attempts failed in a row.
struct Due {
    at: SystemTime,
    failures: u32,
}

pub async fn run(acme: Arc<Acme>) {
    let mut wanted = acme.wanted.subscribe();
    let mut account: Option<Account> = None;
    let mut due: HashMap<Vec<String>, Due> = HashMap::new();
    loop {
        let sets = wanted.borrow_and_update().clone();
        due.retain(|hosts, _| sets.contains(hosts));
        for hosts in &sets {
            let now = SystemTime::now();
            let seen = due.get(hosts);
            if seen.is_some_and(|d| d.at > now) {
                continue;
            }
            let failures = seen.map_or(0, |d| d.failures);
            match refresh(&acme, hosts, &mut account, seen.is_none()).await {
                Ok(renew_at) => {
                    due.insert(
                        hosts.clone(),
                        Due {
                            at: renew_at,
                            failures: 0,
                        },
                    );
                }
                Err(e) => {
                    if account_gone(&e) {
                        cache::forget_account(&acme.settings.cache_dir, &acme.settings.directory);
                        account = None;
                    }
                    let wait = retry_delay(failures + 1);
                    tracing::warn!(
                        hosts = %hosts.join(","),
                        error = %e,
                        retry_in_secs = wait.as_secs(),
                        "cannot obtain an ACME certificate"
                    );
                    due.insert(
                        hosts.clone(),
                        Due {
                            at: SystemTime::now() + wait,
                            failures: failures + 1,
                        },
                    );
                }
            }
        }
        let next = due.values().map(|d| d.at).min();
        let sleep = next
            .map_or(MAX_SLEEP, |at| {
                at.duration_since(SystemTime::now()).unwrap_or_default()
            })
            .clamp(Duration::from_millis(100), MAX_SLEEP);
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Serves a certificate for `hosts` and says when to renew it. On the first look the cache
/// is tried; a cached certificate that is due is served while a new one is ordered.
async fn refresh(
    acme: &Acme,
    hosts: &[String],
    account: &mut Option<Account>,
    first: bool,
) -> Result<SystemTime, OrderError> {
    if first {
        match cache::load_certificate(&acme.settings.cache_dir, hosts) {
            Ok(Some(cached)) => {
                acme.install(hosts, cached.key);
                let renew_at = cached.validity.renew_at();
                if renew_at > SystemTime::now() {
                    tracing::info!(hosts = %hosts.join(","), "ACME certificate loaded from the cache");
                    return Ok(renew_at);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "ignoring a cached ACME certificate"),
        }
    }
    let current = match account.take() {
        Some(a) => a,
        None => order::account(acme).await?,
    };
    let result = order::obtain(acme, &current, hosts).await;
    *account = Some(current);
    let issued = result?;
    acme.install(hosts, issued.key);
    let not_after = humantime::format_rfc3339_seconds(issued.validity.not_after);
    tracing::info!(hosts = %hosts.join(","), %not_after, "ACME certificate obtained");
    Ok(issued.validity.renew_at())
}

/// The CA no longer knows the cached account (deactivated, or a test CA restarted).
fn account_gone(e: &OrderError) -> bool {
    matches!(e, OrderError::Acme(instant_acme::Error::Api(p))
        if p.r#type.as_deref().is_some_and(|t| t.ends_with(":accountDoesNotExist")))
}
