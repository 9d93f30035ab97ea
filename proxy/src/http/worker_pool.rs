//! Upstream connections a worker's downstream connections hand on to each other. HTTP/1.1
//! connections come here after every response, so that the worker's clients share them rather
//! than each keeping one (per target) while it idles: upstream connections, and the memory they
//! hold, follow the requests in flight, as in nginx's keep-alive pool. An HTTP/2 connection comes
//! here when its downstream connection closes, for the worker's next client, which then opens no
//! new connection (nor TLS handshake). A connection serves one downstream connection at a time,
//! HTTP/2 ones too: sharing one between concurrent clients was measured to turn the streams an
//! upstream refuses when it ends a connection (GOAWAY, e.g. nginx's `keepalive_requests`) into
//! 502s. Each worker is a single-threaded runtime, so the pool is thread-local and nothing in it
//! is locked. Connections that open with a PROXY header name one client, and those a client
//! authenticated with NTLM or Negotiate belong to it: neither ever comes here.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::upstream_pool::{Kept, Sender};
use crate::config::HttpService;

/// How long an unused connection stays: under the shortest keep-alive timeout common upstream
/// servers use (5 s: Node.js, Apache), so that a connection taken here is rarely one the
/// upstream is closing at that moment.
const IDLE: Duration = Duration::from_secs(4);
/// At most this many per worker, the least recently parked going first: `--max-connections`
/// (see [`keep_at_most`]). A worker never has more HTTP/1.1 requests in flight than client
/// connections, so a lower bound would close and reopen connections whenever more than that many
/// requests overlap; one connection per client connection is what the descriptor budget behind
/// `--max-connections` allows for anyway.
static KEEP_AT_MOST: AtomicUsize = AtomicUsize::new(256);

/// Sets how many connections each worker's pool keeps at most (the process's connection limit).
pub fn keep_at_most(n: usize) {
    KEEP_AT_MOST.store(n.max(1), Ordering::Relaxed);
}

struct Entry {
    /// Weak: a service a reload replaced is not kept alive by its connections here (nor its
    /// health checks). Its allocation is, so its address cannot come back as another service.
    service: Weak<HttpService>,
    target: usize,
    sender: Sender,
    parked: Instant,
}

impl Entry {
    fn is_for(&self, service: &Arc<HttpService>, target: usize) -> bool {
        self.target == target && std::ptr::eq(self.service.as_ptr(), Arc::as_ptr(service))
    }
}

#[derive(Default)]
struct Shared {
    /// Oldest first.
    idle: VecDeque<Entry>,
    /// Whether a task is closing what went unused (while there is anything).
    sweeping: bool,
}

thread_local! {
    static SHARED: RefCell<Shared> = RefCell::default();
}

/// An idle connection to the service's target, if the worker has one.
pub(super) fn take(service: &Arc<HttpService>, target: usize, upgrade: bool) -> Option<Kept> {
    SHARED.with_borrow_mut(|s| s.take(service, target, upgrade, Instant::now()))
}

/// Keeps a connection for the worker's next client: an idle one whose downstream connection
/// closed, or an HTTP/1.1 one whose response is still being read.
pub(super) fn park(kept: Kept) {
    debug_assert!(
        kept.client.is_none() && !kept.authenticated,
        "bound to one client"
    );
    let start_sweeping = SHARED.with_borrow_mut(|s| {
        s.park(kept, Instant::now());
        !std::mem::replace(&mut s.sweeping, true)
    });
    if start_sweeping {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(sweep())),
            Err(_) => SHARED.with_borrow_mut(|s| s.sweeping = false),
        }
    }
}

/// Closes the connections that went unused, so that they do not stay open when traffic stops;
/// ends when there are none left.
async fn sweep() {
    loop {
        tokio::time::sleep(IDLE).await;
        let done = SHARED.with_borrow_mut(|s| {
            s.expire(Instant::now());
            s.sweeping = !s.idle.is_empty();
            !s.sweeping
        });
        if done {
            return;
        }
    }
}

impl Shared {
    fn take(
        &mut self,
        service: &Arc<HttpService>,
        target: usize,
        upgrade: bool,
        now: Instant,
    ) -> Option<Kept> {
        self.expire(now);
        // The most recently parked first, so that the oldest age out when traffic drops.
        let mut below = self.idle.len();
        while let Some(at) = self
            .idle
            .range(..below)
            .rposition(|e| e.is_for(service, target))
        {
            below = at;
            let entry = &self.idle[at];
            if upgrade && matches!(entry.sender, Sender::Http2(_)) {
                continue; // HTTP/2 cannot carry an upgrade: left for another client.
            }
            if entry.sender.can_send() {
                let entry = self.idle.remove(at)?;
                return Some(Kept {
                    service: service.clone(),
                    target,
                    client: None,
                    authenticated: false,
                    sender: entry.sender,
                });
            }
            if entry.sender.is_closed() {
                self.idle.remove(at);
            }
            // Else still reading a response: left for later.
        }
        None
    }

    fn park(&mut self, kept: Kept, now: Instant) {
        self.expire(now);
        if self.idle.len() >= KEEP_AT_MOST.load(Ordering::Relaxed) {
            self.idle.pop_front();
        }
        self.idle.push_back(Entry {
            service: Arc::downgrade(&kept.service),
            target: kept.target,
            sender: kept.sender,
            parked: now,
        });
    }

    /// Drops what went unused for `IDLE`, and connections of services a reload replaced (once
    /// the oldest is due, so that the request path seldom walks the list).
    fn expire(&mut self, now: Instant) {
        let due = |e: &Entry| now.duration_since(e.parked) > IDLE;
        if !self.idle.front().is_some_and(due) {
            return;
        }
        self.idle
            .retain(|e| !due(e) && e.service.strong_count() > 0);
    }
}
