//! What every listener shares: the current routes (swapped whole on reload) and the sources the
//! filter consults.

use std::net::IpAddr;
use std::time::Duration;

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use crate::accesslog::AccessLog;
use crate::admission::Admission;
use crate::appsec::AppSec;
use crate::clientip::ClientAddressPolicy;
use crate::config::Routes;
use crate::crowdsec::{CrowdSec, Network};
use crate::geo::{AsnDb, GeoDb};
use crate::remediation::captcha::Captcha;
use crate::restrict::{CountryLookup, Filter, Outcome};
use crate::shutdown::Shutdown;

/// Timeouts and limits of the data plane.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time allowed for a connection's first request head, from accept (PROXY header and TLS
    /// handshake included), and for each later one once the connection is idle.
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    /// Close connections on which nothing moved for this long.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers.
    pub upstream_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// The longest wait for a request body's next bytes, and the grace before the minimum
    /// rate applies; zero disables both.
    pub request_body_timeout: Duration,
    /// Bytes per second a request body must average while the proxy waits for it; 0 disables.
    pub request_body_min_rate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(10),
            request_body_min_rate: 1024,
        }
    }
}

pub struct ProxyState {
    pub routes: ArcSwap<Routes>,
    /// Replaced whole when the database file changes.
    pub geo: ArcSwapOption<GeoDb>,
    /// For CrowdSec's `AS` decisions; loaded at start.
    pub asn: Option<AsnDb>,
    pub access_log: AccessLog,
    pub clients: ClientAddressPolicy,
    pub limits: Limits,
    pub crowdsec: Arc<CrowdSec>,
    /// Captcha challenges: the proxy-wide site, the cookie key, the verification client.
    pub captcha: Captcha,
    /// The AppSec component, when configured.
    pub appsec: Option<AppSec>,
    /// Connection slots: global and per client.
    pub admission: Arc<Admission>,
    pub shutdown: Shutdown,
    /// Certificates obtained by ACME, and the challenges being answered.
    pub acme: Arc<crate::acme::Acme>,
    /// Told whenever the routes or the GeoIP database change, so open connections re-check.
    pub policy: PolicyChanges,
}

/// A signal that the policy changed; long-lived connections wait on it to be checked again.
pub struct PolicyChanges(watch::Sender<()>);

impl Default for PolicyChanges {
    fn default() -> Self {
        Self(watch::Sender::new(()))
    }
}

impl PolicyChanges {
    pub fn changed(&self) {
        self.0.send_replace(());
    }

    /// A receiver that sees the changes after this call.
    fn subscribe(&self) -> watch::Receiver<()> {
        self.0.subscribe()
    }
}

/// What can change a connected client's verdict: the configuration (routes, GeoIP database)
/// and the bouncer's decisions.
pub struct PolicyWatch {
    config: watch::Receiver<()>,
    decisions: watch::Receiver<()>,
}

impl PolicyWatch {
    /// Resolves at the next change; never, once both sources are gone.
    pub async fn changed(&mut self) {
        let ended = tokio::select! {
            r = self.config.changed() => r.is_err(),
            r = self.decisions.changed() => r.is_err(),
        };
        if ended {
            // A source went away (only at exit): nothing changes any more.
            std::future::pending::<()>().await;
        }
    }
}

impl ProxyState {
    /// Sees the policy changes after this call.
    pub fn policy_watch(&self) -> PolicyWatch {
        PolicyWatch {
            config: self.policy.subscribe(),
            decisions: self.crowdsec.decision_changes(),
        }
    }

    /// Asks `restrict` about one client, with this process's sources. A denied or flagged
    /// client's country is looked up for the log when the country layer did not.
    pub fn check(&self, filter: &Filter, client: IpAddr) -> Outcome {
        let geo = self.geo.load();
        let lookup = geo.as_deref().map(|g| g as &dyn CountryLookup);
        let mut outcome = filter.check(client, lookup, |ip| {
            self.crowdsec.reputation(ip, || Network {
                asn: self.asn.as_ref().and_then(|db| db.asn(ip)),
                country: geo
                    .as_deref()
                    .and_then(|g| g.country(ip))
                    .map(|c| c.bytes()),
            })
        });
        if outcome.is_noteworthy() && outcome.country.is_none() {
            outcome.country = lookup.and_then(|g| g.country(client.to_canonical()));
        }
        outcome
    }
}
