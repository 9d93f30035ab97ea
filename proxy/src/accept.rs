//! The accept loop both HTTP and TCP listeners run. A connection is admitted (global and
//! per-client caps) before anything is read from it; a refused one is closed at once. When the
//! process runs out of file descriptors, accepting backs off instead of spinning, and says so
//! at a bounded rate.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::admission::{Permit, Refusal};
use crate::ratelimit::LogEvery;
use crate::state::ProxyState;

const MIN_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(10);

static RESOURCES: LogEvery = LogEvery::new(LOG_EVERY);
static REFUSED: [LogEvery; 3] = [
    LogEvery::new(LOG_EVERY),
    LogEvery::new(LOG_EVERY),
    LogEvery::new(LOG_EVERY),
];

/// Accepts until the task is dropped, handing each admitted connection to `serve`.
pub async fn accept_loop(
    listener: TcpListener,
    state: Arc<ProxyState>,
    mut serve: impl FnMut(TcpStream, SocketAddr, Permit),
) {
    let local = listener.local_addr().ok();
    let mut pause = Duration::ZERO;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) if out_of_resources(&e) => {
                pause = (pause * 2).clamp(MIN_PAUSE, MAX_PAUSE);
                if let Some(n) = RESOURCES.hit() {
                    tracing::warn!(
                        listen = ?local,
                        failures = n,
                        "accept failed: {e} ({n} times in the last {}s); backing off up to {}s. \
                         Raise the open-file limit (LimitNOFILE, ulimit -n) or lower --max-connections",
                        LOG_EVERY.as_secs(),
                        MAX_PAUSE.as_secs()
                    );
                }
                tokio::time::sleep(pause).await;
                continue;
            }
            Err(e) => {
                // The client went away between SYN and accept: nothing to do.
                tracing::debug!(listen = ?local, error = %e, "accept failed");
                continue;
            }
        };
        pause = Duration::ZERO;
        let peer_ip = peer.ip().to_canonical();
        // A trusted peer (a load balancer) carries many clients: it is counted per client once
        // its PROXY header names one, never as itself.
        let client = (!state.clients.trusts(peer_ip)).then_some(peer_ip);
        match state.admission.admit(client) {
            Ok(permit) => serve(stream, peer, permit),
            Err(reason) => refused(&state, reason, peer),
        }
    }
}

/// Logs a refused connection at a bounded rate; the stream is closed by the caller dropping it.
pub fn refused(state: &ProxyState, reason: Refusal, peer: SocketAddr) {
    let Some(n) = REFUSED[reason as usize].hit() else {
        return;
    };
    let limit = match reason {
        Refusal::Global => format!("--max-connections {} reached", state.admission.max()),
        Refusal::PerIp => format!("--max-connections-per-ip reached for {}", peer.ip()),
        Refusal::Service => "the service's max_connections reached".to_owned(),
    };
    tracing::warn!(
        reason = reason.as_str(),
        refused = n,
        "connections refused: {limit} ({n} in the last {}s)",
        LOG_EVERY.as_secs()
    );
}

fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
