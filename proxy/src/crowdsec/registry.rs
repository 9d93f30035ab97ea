//! One bouncer per process, reference-counted by the services that use CrowdSec. It starts
//! with the first reference and stops with the last. Callers take new references before
//! dropping old ones, so editing a service never restarts it.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::bouncer;
use super::client::{LapiClient, LapiConfig};
use super::shared::{BouncerStatus, Shared};
use super::store::{Network, Snapshot};
use super::usage::{self, UsageCounts};
use crate::restrict::{CrowdSecMode, Reputation};

pub struct CrowdSec {
    config: Option<LapiConfig>,
    shared: Arc<Shared>,
    usage: Arc<dyn UsageCounts>,
    runtime: Handle,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    refs: usize,
    tasks: Vec<JoinHandle<()>>,
}

/// Held by the running configuration for each service with CrowdSec on.
pub struct BouncerRef(Arc<CrowdSec>);

impl Drop for BouncerRef {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl CrowdSec {
    /// `config` is `None` when no LAPI is configured. Tasks run on `runtime`.
    pub fn new(
        config: Option<LapiConfig>,
        runtime: Handle,
        usage: Arc<dyn UsageCounts>,
    ) -> Arc<Self> {
        let shared = Shared::new();
        if let Ok(mut st) = shared.status.lock() {
            st.configured = config.is_some();
        }
        Arc::new(Self {
            config,
            shared,
            usage,
            runtime,
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn is_configured(&self) -> bool {
        self.config.is_some()
    }

    /// The per-request check: lock-free.
    #[inline]
    pub fn reputation(&self, addr: IpAddr, network: impl FnOnce() -> Network) -> Reputation {
        self.shared.reputation(addr, network)
    }

    /// Sees each new set of decisions after this call.
    pub fn decision_changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.shared.snapshots()
    }

    /// The decisions in use, for metrics.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot()
    }

    /// The store's clock (seconds since its epoch), to judge expiry in [`Self::snapshot`].
    pub fn now(&self) -> u32 {
        self.shared.now()
    }

    /// LAPI calls by (call, outcome).
    pub fn calls(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.shared.calls()
    }

    pub fn status(&self) -> BouncerStatus {
        let mut s = self.shared.status();
        s.running = self
            .inner
            .lock()
            .map(|i| !i.tasks.is_empty())
            .unwrap_or(false);
        let missed = self
            .config
            .as_ref()
            .map(|c| c.update_interval * 3)
            .unwrap_or_default();
        s.stale = s.running && s.synced && self.shared.since_last_ok().is_some_and(|d| d > missed);
        s
    }

    /// The bouncer key's salted fingerprint (see [`super::ApiKey::fingerprint`]), when a key is set.
    pub fn key_fingerprint(&self, salt: &str) -> Option<String> {
        let key = self.config.as_ref()?.api_key.as_ref()?;
        Some(key.fingerprint(salt))
    }

    /// One reference if any of `services` (id, mode) uses CrowdSec, else none. Warns about each
    /// such service when no LAPI is configured: what it will do instead.
    pub fn reference_for<'a>(
        self: &Arc<Self>,
        services: impl Iterator<Item = (&'a str, CrowdSecMode)>,
    ) -> Option<BouncerRef> {
        let mut used = false;
        for (id, mode) in services.filter(|(_, m)| m.is_on()) {
            used = true;
            if !self.is_configured() {
                tracing::warn!(
                    service = %id,
                    %mode,
                    "service \"{id}\" uses crowdsec_mode {mode} but no --crowdsec-api-url is configured: {}",
                    if mode == CrowdSecMode::Enforce {
                        "it denies every request (crowdsec_unavailable)"
                    } else {
                        "every entry records crowdsec_unavailable"
                    }
                );
            }
        }
        used.then(|| self.acquire())
    }

    pub fn acquire(self: &Arc<Self>) -> BouncerRef {
        let mut inner = self.inner.lock().expect("crowdsec registry");
        inner.refs += 1;
        if inner.refs == 1 {
            self.start(&mut inner);
        }
        BouncerRef(self.clone())
    }

    fn release(&self) {
        let mut inner = self.inner.lock().expect("crowdsec registry");
        inner.refs = inner.refs.saturating_sub(1);
        if inner.refs == 0 && !inner.tasks.is_empty() {
            for t in inner.tasks.drain(..) {
                t.abort();
            }
            self.shared.reset();
            tracing::info!("CrowdSec bouncer stopped");
        }
    }

    fn start(&self, inner: &mut Inner) {
        let Some(cfg) = &self.config else {
            return;
        };
        let client = match LapiClient::new(cfg.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("CrowdSec bouncer cannot start: {e}");
                if let Ok(mut st) = self.shared.status.lock() {
                    st.last_error = Some(e.to_string());
                }
                return;
            }
        };
        if cfg.insecure_skip_verify {
            tracing::warn!(
                "INSECURE: --crowdsec-insecure-skip-verify is set: the LAPI's certificate is NOT verified; anyone on the path can feed or suppress decisions"
            );
        }
        self.shared.reset();
        inner
            .tasks
            .push(self.runtime.spawn(bouncer::tick_clock(self.shared.clone())));
        if !cfg.usage_metrics_interval.is_zero() {
            inner.tasks.push(self.runtime.spawn(usage::run(
                client.clone(),
                self.shared.clone(),
                self.usage.clone(),
                cfg.usage_metrics_interval,
            )));
        }
        inner.tasks.push(
            self.runtime
                .spawn(bouncer::run(client, self.shared.clone())),
        );
        tracing::info!("CrowdSec bouncer started");
    }
}
