//! The stream loop: a full sync at start (and periodically), deltas every interval, capped
//! exponential backoff with jitter on failure. A failure never empties the cache; the state is
//! logged when it changes, not on every poll.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::client::{LapiClient, LapiConfig, LapiError};
use super::shared::{Call, Shared};
use super::store::Store;
use crate::backoff::backoff;

const PURGE_EVERY: Duration = Duration::from_secs(600);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

pub(super) async fn run(client: LapiClient, shared: Arc<Shared>) {
    let cfg = client.config().clone();
    tracing::info!(url = %cfg.url, "connecting to CrowdSec LAPI at {}", cfg.url);
    let mut store = Some(Store::continuing(&shared.snapshot()));
    let mut need_full = true;
    let mut last_full = Instant::now();
    let mut last_purge = Instant::now();
    let mut failures: u32 = 0;
    let mut failing: Option<&'static str> = None;
    let mut unmatched_said = (false, false);
    loop {
        let full = need_full || last_full.elapsed() >= cfg.resync_interval;
        let polled = client.stream(full).await;
        shared.count_call(
            Call::Stream,
            polled.as_ref().map_or_else(|e| e.kind(), |_| "ok"),
        );
        match polled {
            Ok(batch) => {
                let (skipped, new, deleted) = (batch.skipped, batch.new.len(), batch.deleted.len());
                let purge = last_purge.elapsed() >= PURGE_EVERY;
                // Building a snapshot of a million decisions takes a while: off the runtime.
                let mut s = store
                    .take()
                    .unwrap_or_else(|| Store::continuing(&shared.snapshot()));
                let sh = shared.clone();
                let built = tokio::task::spawn_blocking(move || {
                    let now = sh.tick();
                    let snap = if full {
                        s.replace_all(batch, now)
                    } else if purge {
                        s.apply(batch, now);
                        s.purge_expired(now)
                    } else {
                        s.apply(batch, now)
                    };
                    if full || purge {
                        // The answer's temporaries, freed here, go back to the system now:
                        // this thread may not allocate again for an hour.
                        crate::memory::release_freed();
                    }
                    (s, snap)
                })
                .await;
                let snap = match built {
                    Ok((s, snap)) => {
                        store = Some(s);
                        snap
                    }
                    Err(e) => {
                        // Keep serving the last snapshot; rebuild from a full sync.
                        tracing::error!("CrowdSec decision update failed ({e}); keeping the last known decisions");
                        need_full = true;
                        tokio::time::sleep(backoff(1, cfg.update_interval.max(MAX_BACKOFF))).await;
                        continue;
                    }
                };
                let count = snap.len();
                say_unmatched(&cfg, snap.scoped_len(), &mut unmatched_said);
                shared.publish(snap);
                if full {
                    // The snapshot it replaced (a resync's, after an hour) is freed here.
                    crate::memory::release_freed();
                }
                if purge {
                    last_purge = Instant::now();
                }
                if full {
                    last_full = Instant::now();
                    need_full = false;
                }
                if !shared.is_synced() {
                    shared.set_synced(true);
                    tracing::info!(
                        decisions = count,
                        skipped,
                        "CrowdSec bouncer synced initial decisions ({count})"
                    );
                } else {
                    tracing::debug!(
                        full,
                        new,
                        deleted,
                        skipped,
                        decisions = count,
                        "CrowdSec decisions updated"
                    );
                }
                if failing.take().is_some() {
                    tracing::info!(decisions = count, "CrowdSec LAPI reachable again");
                }
                failures = 0;
                shared.poll_succeeded();
                if let Ok(mut st) = shared.status.lock() {
                    st.last_sync = Some(SystemTime::now());
                    st.last_error = None;
                }
                tokio::time::sleep(cfg.update_interval).await;
            }
            Err(e) => {
                if e.needs_resync() {
                    need_full = true;
                }
                if failing != Some(e.kind()) {
                    report(&shared, &cfg.url, &e);
                    failing = Some(e.kind());
                }
                if let Ok(mut st) = shared.status.lock() {
                    st.last_error = Some(e.to_string());
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(backoff(failures, cfg.update_interval.max(MAX_BACKOFF))).await;
            }
        }
    }
}

/// Once per process and scope: decisions that need a database the proxy was not given.
fn say_unmatched(cfg: &LapiConfig, (asns, countries): (usize, usize), said: &mut (bool, bool)) {
    if asns > 0 && !cfg.has_asn_db && !said.0 {
        said.0 = true;
        tracing::warn!(
            decisions = asns,
            "CrowdSec: {asns} decisions with scope AS are skipped: they need --asn-db"
        );
    }
    if countries > 0 && !cfg.has_geo_db && !said.1 {
        said.1 = true;
        tracing::warn!(
            decisions = countries,
            "CrowdSec: {countries} decisions with scope Country are skipped: they need --geo-db"
        );
    }
}

fn report(shared: &Shared, url: &reqwest::Url, e: &LapiError) {
    if shared.is_synced() {
        tracing::warn!(
            decisions = shared.decisions(),
            "CrowdSec LAPI at {url}: {e}; keeping the last known decisions"
        );
    } else {
        tracing::warn!("CrowdSec LAPI at {url}: {e}; not synced yet: enforce services deny (crowdsec_unavailable)");
    }
}

/// Advances the coarse clock the lookups read, so decisions expire on time even when the LAPI
/// is unreachable.
pub(super) async fn tick_clock(shared: Arc<Shared>) {
    let mut t = tokio::time::interval(Duration::from_millis(250));
    loop {
        t.tick().await;
        shared.tick();
    }
}
