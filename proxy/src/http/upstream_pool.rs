//! A downstream connection's upstream connection: one HTTP/1.1 connection, kept for the next
//! request of the same downstream connection. One upstream connection per downstream
//! connection needs no shared pool and no lock that other connections contend on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::body::CountedBody;
use crate::upstream::{dial, UpstreamError};

struct Kept {
    address: Arc<str>,
    sender: SendRequest<CountedBody>,
}

/// Only its downstream connection touches it; HTTP/2 streams may briefly overlap.
#[derive(Default)]
pub struct UpstreamPool {
    idle: Mutex<Option<Kept>>,
}

/// How long to wait for an upstream.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub connect: Duration,
    /// For the response headers (the request body included).
    pub response: Duration,
}

impl UpstreamPool {
    /// Sends `req` to `address` over the kept connection, or a new one.
    pub async fn send(
        &self,
        address: &str,
        req: Request<CountedBody>,
        deadlines: Deadlines,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let Kept {
            address,
            mut sender,
        } = match self.take_idle(address) {
            Some(kept) => kept,
            None => connect(address, deadlines.connect).await?,
        };
        let resp = match tokio::time::timeout(deadlines.response, sender.send_request(req)).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) => {
                tracing::debug!(upstream = %address, error = %e, "upstream request failed");
                return Err(if e.is_canceled() || e.is_incomplete_message() {
                    UpstreamError::Closed
                } else {
                    UpstreamError::Failed
                });
            }
            Ok(Ok(r)) => r,
        };
        // An upgraded connection belongs to its tunnel now.
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            if let Ok(mut slot) = self.idle.lock() {
                *slot = Some(Kept { address, sender });
            }
        }
        Ok(resp)
    }

    /// Takes the kept connection if it goes to `address` and can send now.
    fn take_idle(&self, address: &str) -> Option<Kept> {
        let mut slot = self.idle.lock().ok()?;
        match slot.take() {
            Some(c) if &*c.address == address && c.sender.is_ready() => Some(c),
            Some(c) if !c.sender.is_closed() && &*c.address == address => {
                // Busy with another (HTTP/2) stream's body: keep it for later, open another.
                *slot = Some(c);
                None
            }
            _ => None,
        }
    }
}

async fn connect(address: &str, timeout: Duration) -> Result<Kept, UpstreamError> {
    let stream = dial(address, timeout).await?;
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| UpstreamError::Failed)?;
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    Ok(Kept {
        address: address.into(),
        sender,
    })
}
