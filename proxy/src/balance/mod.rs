//! Services with several upstream targets: the choice of a target per request (HTTP) or
//! connection (TCP), passive health from what requests see, and active health checks.

mod health;
mod targets;
#[cfg(test)]
mod tests;

pub use health::start_checks;
pub use targets::{now_ms, InFlight, Targets};

use crate::config::{Routes, Service};

/// A reload takes over the target state of the services it keeps (by id and target name), so
/// that an ejected target stays out and counters carry on.
pub fn carry_over(old: &Routes, new: &Routes) {
    for service in &new.services {
        let Some(before) = old.services.iter().find(|o| o.id() == service.id()) else {
            continue;
        };
        match (service, before) {
            (Service::Http(n), Service::Http(o)) => n.targets.adopt(&o.targets),
            (Service::Tcp(n), Service::Tcp(o)) => {
                n.targets.adopt(&o.targets);
                // A service's max_connections counts the connections it already has.
                n.slots.store(o.slots.load_full());
            }
            _ => {}
        }
    }
}

/// The targets of services that balance (several targets) or check them, as `/readyz`,
/// metrics and management's report show them. A lone unchecked target has no state worth
/// showing: it gets every request whatever happens.
pub fn report(routes: &Routes) -> Vec<nb_api::TargetReport> {
    let now = now_ms();
    let mut out = Vec::new();
    for service in &routes.services {
        let shown = |n: usize| n > 1 || service.spec().health_check.is_some();
        match service {
            Service::Http(s) if shown(s.targets.len()) => out.extend(s.targets.report(now)),
            Service::Tcp(s) if shown(s.targets.len()) => out.extend(s.targets.report(now)),
            _ => {}
        }
    }
    out
}
