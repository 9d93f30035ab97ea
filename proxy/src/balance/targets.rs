//! A service's upstream targets and their live state. Picking a target and recording what
//! happened are atomics only: the request path takes no lock.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use nb_api::{LoadBalancing, PassiveHealthSpec, TargetReport};

/// Milliseconds on the proxy's monotonic clock (since its first use), the time `Targets` reads.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One target's live state.
#[derive(Debug, Default)]
pub struct TargetState {
    in_flight: AtomicU64,
    consecutive_failures: AtomicU32,
    /// On the [`now_ms`] clock: out of rotation until then; 0 when not ejected.
    ejected_until: AtomicU64,
    /// The latest active health check failed.
    check_failed: AtomicBool,
    requests: AtomicU64,
    failures: AtomicU64,
    /// The state that replaced this one at a reload: requests begun here and still in flight
    /// count there too, so least-connections sees them after the reload.
    successor: OnceLock<Arc<TargetState>>,
}

impl TargetState {
    /// This state and those that replaced it, oldest first.
    fn lineage(&self) -> impl Iterator<Item = &TargetState> {
        std::iter::successors(Some(self), |s| s.successor.get().map(|n| &**n))
    }

    fn available(&self, now: u64) -> bool {
        !self.check_failed.load(Relaxed) && self.ejected_until.load(Relaxed) <= now
    }

    /// What a reload keeps of the target it replaces, in-flight requests included (their
    /// guards also release them here, through `successor`).
    fn adopt(&self, old: &TargetState) {
        let copy = |new: &AtomicU64, old: &AtomicU64| new.store(old.load(Relaxed), Relaxed);
        copy(&self.in_flight, &old.in_flight);
        copy(&self.ejected_until, &old.ejected_until);
        copy(&self.requests, &old.requests);
        copy(&self.failures, &old.failures);
        self.consecutive_failures
            .store(old.consecutive_failures.load(Relaxed), Relaxed);
        self.check_failed
            .store(old.check_failed.load(Relaxed), Relaxed);
    }
}

/// A target: where to go (`U`), the name the operator wrote, and its state.
#[derive(Debug)]
pub struct Target<U> {
    pub upstream: U,
    /// As written in the service: what logs, metrics and reports call it.
    pub name: Arc<str>,
    state: Arc<TargetState>,
}

/// A request's (or connection's) hold on a target: counted in flight until dropped. Empty
/// for a service whose counts nobody reads (one target, no health check).
#[derive(Debug)]
pub struct InFlight(Option<Arc<TargetState>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(state) = &self.0 {
            for s in state.lineage() {
                // Saturating: a request begun in the instant between a reload's copy of the
                // count and its link was counted in the old state only.
                let _ = s
                    .in_flight
                    .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
            }
        }
    }
}

/// A service's targets, in the order written.
#[derive(Debug)]
pub struct Targets<U> {
    service: Arc<str>,
    list: Box<[Target<U>]>,
    next: AtomicUsize,
    balancing: LoadBalancing,
    max_failures: u32,
    eject_ms: u64,
    /// Whether requests are counted per target. Every connection of a one-target service
    /// would otherwise write the same cache lines on every request, across worker threads.
    counted: bool,
}

impl<U> Targets<U> {
    /// `list` must not be empty (validation refuses a service without an upstream).
    pub fn new(
        service: Arc<str>,
        list: Vec<(Arc<str>, U)>,
        balancing: LoadBalancing,
        passive: PassiveHealthSpec,
    ) -> Self {
        assert!(!list.is_empty(), "a service has at least one target");
        let n = list.len();
        let list = list
            .into_iter()
            .map(|(name, upstream)| Target {
                upstream,
                name,
                state: Arc::default(),
            })
            .collect();
        Self {
            service,
            list,
            next: AtomicUsize::new(0),
            balancing,
            max_failures: passive.max_failures,
            eject_ms: u64::from(passive.eject_secs) * 1000,
            counted: n > 1,
        }
    }

    /// Counts requests even with one target: its health check makes it shown.
    pub fn counted(mut self) -> Self {
        self.counted = true;
        self
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn get(&self, i: usize) -> &Target<U> {
        &self.list[i]
    }

    /// Target `i`'s name for the access log: only a service with several names one.
    pub fn logged_name(&self, i: usize) -> Option<Arc<str>> {
        (self.list.len() > 1).then(|| self.list[i].name.clone())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Target<U>> {
        self.list.iter()
    }

    /// The target for the next request at `now`, other than `except` (the one a retry leaves).
    /// Targets in rotation first, by the balancing policy. When none is and nothing is
    /// excluded, one anyway: trying a target that may have recovered beats refusing every
    /// request. `None` only when `except` was the only candidate.
    pub fn pick(&self, now: u64, except: Option<usize>) -> Option<usize> {
        let n = self.list.len();
        if n == 1 {
            // No shared counter to bump for the common single-target service.
            return (except != Some(0)).then_some(0);
        }
        let start = self.next.fetch_add(1, Relaxed) % n;
        let candidates = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| Some(i) != except && self.list[i].state.available(now));
        let chosen = match self.balancing {
            LoadBalancing::RoundRobin => {
                let chosen = candidates.into_iter().next();
                // Skipped targets move the rotation on, so the next one is not picked twice.
                if let Some(i) = chosen {
                    let skipped = (i + n - start) % n;
                    if skipped > 0 {
                        self.next.fetch_add(skipped, Relaxed);
                    }
                }
                chosen
            }
            // The first of the least loaded, from a rotating start: ties are spread.
            LoadBalancing::LeastConnections => {
                candidates.min_by_key(|&i| self.list[i].state.in_flight.load(Relaxed))
            }
        };
        match (chosen, except) {
            (Some(i), _) => Some(i),
            (None, None) => Some(start),
            (None, Some(_)) => None,
        }
    }

    /// Runs `attempt` (a connection) on the picked target; when it fails and `retry` is set,
    /// once more on another target. Each failed attempt counts against its target's passive
    /// health. Gives the target with what it returned.
    pub async fn attempt<T, E, F, Fut>(
        &self,
        retry: bool,
        mut attempt: F,
    ) -> Result<(usize, T), (usize, E)>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        // A lone target needs no clock: it is picked whatever its state.
        let now = if self.list.len() > 1 { now_ms() } else { 0 };
        let mut target = self
            .pick(now, None)
            .expect("a first pick always finds a target");
        let mut retried = false;
        loop {
            let error = match attempt(target).await {
                Ok(v) => return Ok((target, v)),
                Err(error) => error,
            };
            self.failed(target, now_ms());
            let another = (retry && !retried)
                .then(|| self.pick(now_ms(), Some(target)))
                .flatten();
            let Some(another) = another else {
                return Err((target, error));
            };
            tracing::debug!(service = %self.service, target = %self.list[target].name,
                error = %error, "upstream connect failed: retrying on another target");
            (target, retried) = (another, true);
        }
    }

    /// Counts a request (or connection) to target `i` until the guard drops.
    pub fn begin(&self, i: usize) -> InFlight {
        if !self.counted {
            return InFlight(None);
        }
        let state = &self.list[i].state;
        // A worker may still pick from the routes a reload replaced: the newer state counts it.
        for s in state.lineage() {
            s.in_flight.fetch_add(1, Relaxed);
        }
        state.requests.fetch_add(1, Relaxed);
        InFlight(Some(state.clone()))
    }

    /// Target `i` answered: its failure streak ends, and an ejection with it.
    pub fn succeeded(&self, i: usize) {
        let state = &self.list[i].state;
        if state.consecutive_failures.load(Relaxed) != 0 {
            state.consecutive_failures.store(0, Relaxed);
        }
        if state.ejected_until.load(Relaxed) != 0 {
            state.ejected_until.store(0, Relaxed);
            tracing::info!(service = %self.service, target = %self.list[i].name,
                "upstream target answered again: back in rotation");
        }
    }

    /// Target `i` failed to connect or timed out at `now`. Returns whether this ejected it.
    pub fn failed(&self, i: usize, now: u64) -> bool {
        let state = &self.list[i].state;
        state.failures.fetch_add(1, Relaxed);
        let streak = state.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if self.max_failures == 0 || streak < self.max_failures {
            return false;
        }
        state.consecutive_failures.store(0, Relaxed);
        state.ejected_until.store(now + self.eject_ms, Relaxed);
        tracing::warn!(service = %self.service, target = %self.list[i].name, failures = streak,
            eject_secs = self.eject_ms / 1000, "upstream target ejected after failures in a row");
        true
    }

    /// The latest active health check of target `i` passed (`true`) or failed.
    pub fn checked(&self, i: usize, healthy: bool) {
        let state = &self.list[i].state;
        let was_failed = state.check_failed.swap(!healthy, Relaxed);
        let name = &self.list[i].name;
        match (was_failed, healthy) {
            (false, false) => tracing::warn!(service = %self.service, target = %name,
                "upstream target failed its health check: out of rotation"),
            (true, true) => tracing::info!(service = %self.service, target = %name,
                "upstream target passed its health check: back in rotation"),
            _ => {}
        }
    }

    /// Takes over the state of `old`'s targets of the same name (a reload of the service).
    pub fn adopt<V>(&self, old: &Targets<V>) {
        for target in self.list.iter() {
            if let Some(o) = old.list.iter().find(|o| o.name == target.name) {
                target.state.adopt(&o.state);
                let _ = o.state.successor.set(target.state.clone());
            }
        }
    }

    /// Each target as reports, `/readyz` and metrics show it at `now`.
    pub fn report(&self, now: u64) -> impl Iterator<Item = TargetReport> + '_ {
        self.list.iter().map(move |t| {
            let s = &t.state;
            let reason = if s.check_failed.load(Relaxed) {
                Some("check failed")
            } else if s.ejected_until.load(Relaxed) > now {
                Some("ejected")
            } else {
                None
            };
            TargetReport {
                service: self.service.to_string(),
                target: t.name.to_string(),
                healthy: reason.is_none(),
                reason: reason.map(str::to_owned),
                in_flight: s.in_flight.load(Relaxed),
                requests: s.requests.load(Relaxed),
                failures: s.failures.load(Relaxed),
            }
        })
    }
}
