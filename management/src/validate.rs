//! Service validation: the candidate passes `nb_api`'s checks, the ones a proxy's compiler runs,
//! and what it claims (hosts, listen addresses) is checked against the routes other services
//! hold, so management accepts exactly what a proxy will run without reading every service.
//! Plus management's own limits and the CrowdSec capability rule for the cluster.

use std::time::Duration;

use nb_api::validate::check_service;
use nb_api::ServiceSpec;
use serde::Serialize;

use crate::store::Proxy;

/// One thing wrong with a request body, located by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldProblem {
    /// Dotted path: `hosts`, `restrictions.cidr_allow`, …
    pub field: String,
    pub message: String,
}

impl FieldProblem {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
}

/// The group every proxy and service is in unless told otherwise.
pub const DEFAULT_GROUP: &str = "default";
/// Most groups one service may target.
pub const MAX_GROUPS: usize = 32;

/// What is wrong with a proxy group's name, if anything: the same shape as a service id.
pub fn group_problem(group: &str) -> Option<String> {
    (!valid_id(group)).then(|| {
        format!(
            "\"{group}\" is not a group name: 1-63 lower-case letters, digits, '-', '_' or '.', \
             starting with a letter or digit"
        )
    })
}

/// The problems of a service's `groups`: at least one, valid names, no repeats.
pub fn groups_problems(groups: &[String]) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    if groups.is_empty() {
        problems.push(FieldProblem::new(
            "groups",
            "name at least one proxy group (\"default\" is every proxy's unless told otherwise)",
        ));
    }
    if groups.len() > MAX_GROUPS {
        problems.push(FieldProblem::new(
            "groups",
            format!("at most {MAX_GROUPS} groups"),
        ));
    }
    for (i, g) in groups.iter().enumerate() {
        if let Some(why) = group_problem(g) {
            problems.push(FieldProblem::new(&format!("groups[{i}]"), why));
        } else if groups[..i].contains(g) {
            problems.push(FieldProblem::new(
                &format!("groups[{i}]"),
                format!("\"{g}\" is listed twice"),
            ));
        }
    }
    problems
}

/// The proxies of these groups: the ones a service targeting them runs on.
pub fn in_groups(proxies: &[Proxy], groups: &[String]) -> Vec<Proxy> {
    proxies
        .iter()
        .filter(|p| groups.contains(&p.group))
        .cloned()
        .collect()
}

/// Most hosts one service may have, and entries one CIDR or country list may hold: bounds on
/// what one request can make every proxy compile.
pub const MAX_HOSTS: usize = 100;
pub const MAX_CIDRS: usize = 10_000;
pub const MAX_COUNTRIES: usize = 300;
pub const MAX_NAME: usize = 200;

/// Problems with `candidate` on its own: the proxy's compiler, and management's own rules.
/// Conflicts with other services are [`conflict_problems`].
pub fn validate_service(candidate: &ServiceSpec) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    if !valid_id(&candidate.id) {
        problems.push(FieldProblem::new(
            "id",
            "must be 1-63 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit",
        ));
    }
    if candidate.tls.as_ref().is_some_and(|t| !t.acme) {
        problems.push(FieldProblem::new(
            "tls",
            "certificate files live on each proxy: start nb-proxy with --tls-dir instead, or \
             set acme: true",
        ));
    }
    let r = &candidate.restrictions;
    let before = problems.len();
    let mut too_many = |field: &str, len: usize, max: usize, what: &str| {
        if len > max {
            problems.push(FieldProblem::new(
                field,
                format!("{len} {what}; at most {max} per service"),
            ));
        }
    };
    too_many("hosts", candidate.hosts.len(), MAX_HOSTS, "hosts");
    too_many(
        "restrictions.cidr_allow",
        r.cidr_allow.len(),
        MAX_CIDRS,
        "entries",
    );
    too_many(
        "restrictions.cidr_deny",
        r.cidr_deny.len(),
        MAX_CIDRS,
        "entries",
    );
    too_many(
        "restrictions.country_allow",
        r.country_allow.len(),
        MAX_COUNTRIES,
        "entries",
    );
    too_many(
        "restrictions.country_deny",
        r.country_deny.len(),
        MAX_COUNTRIES,
        "entries",
    );
    if problems.len() > before {
        // Oversized lists are not worth compiling.
        return problems;
    }
    let mut probe = candidate.clone();
    // Certificate files were refused above; ACME is checked like the proxy checks it.
    probe.tls = probe.tls.filter(|t| t.acme);
    if let Err(found) = check_service(probe) {
        for p in found {
            problems.push(FieldProblem::new(p.field.unwrap_or("service"), p.message));
        }
    }
    problems
}

pub use nb_api::validate::routes_of;

/// The problems of `spec` claiming routes other services hold (`owners`: route and holder).
pub fn conflict_problems(
    spec: &ServiceSpec,
    owners: &[((&'static str, String), String)],
) -> Vec<FieldProblem> {
    owners
        .iter()
        .filter(|(_, owner)| *owner != spec.id)
        .map(|((kind, key), owner)| match *kind {
            "host" => FieldProblem::new(
                "hosts",
                format!(
                    "{} is already served by service \"{owner}\"",
                    nb_api::validate::describe_http_route(key)
                ),
            ),
            "sni" => {
                let (listen, name) = key.split_once(' ').unwrap_or((key, ""));
                FieldProblem::new(
                    "hosts",
                    nb_api::validate::describe_sni_claim(listen, name, owner),
                )
            }
            _ => FieldProblem::new(
                "listen",
                format!("{key} is already used by service \"{owner}\""),
            ),
        })
        .collect()
}

/// Whether the cluster can run services with CrowdSec enforce/observe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CrowdSecSupport {
    pub supported: bool,
    /// Why not, in the operator's words, and how to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub live_proxies: usize,
    pub live_proxies_with_crowdsec: usize,
}

/// Every live proxy of the service's groups serves it, so all of them must have a bouncer.
/// `groups`: `None` for the whole fleet.
pub fn crowdsec_support(
    proxies: &[Proxy],
    groups: Option<&[String]>,
    now_ms: i64,
    live_window: Duration,
) -> CrowdSecSupport {
    support(
        proxies,
        groups,
        now_ms,
        live_window,
        |p| p.supports_crowdsec,
        Feature {
            name: "CrowdSec",
            what: "CrowdSec LAPI",
            flags: "--crowdsec-api-url and --crowdsec-api-key",
        },
    )
}

/// The same rule for AppSec: every live proxy of the groups must have an AppSec component.
pub fn appsec_support(
    proxies: &[Proxy],
    groups: Option<&[String]>,
    now_ms: i64,
    live_window: Duration,
) -> CrowdSecSupport {
    support(
        proxies,
        groups,
        now_ms,
        live_window,
        |p| p.report.as_ref().is_some_and(|r| r.supports_appsec),
        Feature {
            name: "AppSec",
            what: "AppSec component",
            flags: "--appsec-url",
        },
    )
}

struct Feature {
    name: &'static str,
    what: &'static str,
    flags: &'static str,
}

fn support(
    proxies: &[Proxy],
    groups: Option<&[String]>,
    now_ms: i64,
    live_window: Duration,
    has: impl Fn(&Proxy) -> bool,
    f: Feature,
) -> CrowdSecSupport {
    let live: Vec<&Proxy> = proxies
        .iter()
        .filter(|p| p.is_live(now_ms, live_window))
        .filter(|p| groups.is_none_or(|g| g.contains(&p.group)))
        .collect();
    // "proxy", or "proxy of group \"eu\"" when other groups exist, for the messages.
    let of = match groups {
        Some(g) if proxies.iter().any(|p| !g.contains(&p.group)) => {
            let names: Vec<&str> = g.iter().map(String::as_str).collect();
            format!(
                " of group{} {}",
                if g.len() == 1 { "" } else { "s" },
                quoted_list(&names)
            )
        }
        _ => String::new(),
    };
    let without: Vec<&str> = live
        .iter()
        .filter(|p| !has(p))
        .map(|p| p.name.as_str())
        .collect();
    let reason = if live.is_empty() {
        Some(format!(
            "no proxy{of} is connected: {} needs a live proxy{of} (one with its stream open) \
             started with {}",
            f.name, f.flags
        ))
    } else if !without.is_empty() {
        Some(format!(
            "not every live proxy{of} supports {}: {} {} no {} configured; start {} with {}",
            f.name,
            quoted_list(&without),
            if without.len() == 1 { "has" } else { "have" },
            f.what,
            if without.len() == 1 { "it" } else { "them" },
            f.flags,
        ))
    } else {
        None
    };
    CrowdSecSupport {
        supported: reason.is_none(),
        reason,
        live_proxies: live.len(),
        live_proxies_with_crowdsec: live.len() - without.len(),
    }
}

/// For each live proxy that shares its bouncer key (by fingerprint) with another live proxy,
/// the names of those others.
pub fn shared_bouncer_keys(
    proxies: &[Proxy],
    now_ms: i64,
    live_window: Duration,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let live: Vec<(&Proxy, &str)> = proxies
        .iter()
        .filter(|p| p.is_live(now_ms, live_window))
        .filter_map(|p| {
            let fp = p.report.as_ref()?.crowdsec_key_fingerprint.as_deref()?;
            Some((p, fp))
        })
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for (p, fp) in &live {
        let others: Vec<String> = live
            .iter()
            .filter(|(q, other)| q.id != p.id && other == fp)
            .map(|(q, _)| q.name.clone())
            .collect();
        if !others.is_empty() {
            out.insert(p.name.clone(), others);
        }
    }
    out
}

fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
