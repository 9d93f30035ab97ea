//! After an upgrade (WebSocket): bytes both ways between client and upstream. The tunnel holds
//! its connection's slot, and ends at the shutdown cut.

use std::sync::Arc;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::admission::Permit;
use crate::shutdown::{Phase, ShutdownWatch};

pub async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    _permit: Arc<Permit>,
    mut shutdown: ShutdownWatch,
) {
    let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
        return;
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = shutdown.reached(Phase::Cut) => {}
    }
}
