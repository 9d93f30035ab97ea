//! The audit log: every change and sign-in is recorded here, one place, with who, when, from
//! which address, and the object before and after (never a secret: views, not rows).

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::{Admin, Caller};
use super::time::{parse_rfc3339, rfc3339};
use super::{ApiError, AppState, ErrorBody};
use crate::store::{now_ms, AuditEntry, AuditFilter, Store};

/// One change to record.
pub struct Change {
    action: &'static str,
    kind: &'static str,
    object: String,
    before: Option<Value>,
    after: Option<Value>,
}

impl Change {
    pub fn new(action: &'static str, kind: &'static str, object: &str) -> Self {
        Self {
            action,
            kind,
            object: object.to_owned(),
            before: None,
            after: None,
        }
    }

    pub fn before(mut self, v: &impl Serialize) -> Self {
        self.before = serde_json::to_value(v).ok();
        self
    }

    pub fn after(mut self, v: &impl Serialize) -> Self {
        self.after = serde_json::to_value(v).ok();
        self
    }
}

/// Records a change. The change itself is already made: a failure to record it is logged as an
/// error (with what was not recorded), not returned to the caller.
pub async fn record(store: &Store, actor: &str, source: &str, change: Change) {
    let entry = AuditEntry {
        id: 0,
        at: now_ms(),
        actor: actor.to_owned(),
        source: source.to_owned(),
        action: change.action.to_owned(),
        kind: change.kind.to_owned(),
        object: change.object,
        before: change.before,
        after: change.after,
    };
    if let Err(e) = store.record_audit(&entry).await {
        tracing::error!(
            actor,
            action = entry.action,
            kind = entry.kind,
            object = entry.object,
            "cannot record an audit entry: {e}"
        );
    }
}

impl AppState {
    pub async fn audit(&self, actor: &str, source: &str, change: Change) {
        record(&self.store, actor, source, change).await;
    }

    pub async fn audit_by(&self, caller: &Caller, change: Change) {
        self.audit(&caller.actor, &caller.source, change).await;
    }
}

/// The dotted paths of the fields that differ between two JSON values (arrays compare whole).
pub fn changed_fields(before: Option<&Value>, after: Option<&Value>) -> Vec<String> {
    fn walk(prefix: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, x.get(k), y.get(k), out);
                }
            }
            (Some(Value::Object(x)), None) | (None, Some(Value::Object(x)))
                if prefix.is_empty() =>
            {
                out.extend(x.keys().cloned());
            }
            (x, y) if x != y && !prefix.is_empty() => out.push(prefix.to_owned()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// A user's name, or `admin token`.
    pub actor: Option<String>,
    /// `create`, `update`, `delete`, `revoke`, `sign_in`, `sign_in_failed`, `sign_out`.
    pub action: Option<String>,
    /// `service`, `proxy`, `user`, `token`, `session`.
    pub kind: Option<String>,
    /// An object's id (or a user's name).
    pub object: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
    /// `next_before` of the previous page.
    pub before: Option<i64>,
    /// 1-1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub kind: String,
    pub object: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// Fields that differ between before and after, as dotted paths.
    pub changed: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditView>,
    /// Pass as `before` for older entries; absent on the last page.
    pub next_before: Option<i64>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

#[utoipa::path(get, path = "/api/v1/audit", operation_id = "audit_log", tag = "audit",
    security(("admin" = []), ("session" = [])),
    params(AuditQuery),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn query(
    _: Admin,
    State(st): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit: {limit} is out of range (1-1000)"
        )));
    }
    let filter = AuditFilter {
        actor: non_empty(q.actor),
        action: non_empty(q.action),
        kind: non_empty(q.kind),
        object: non_empty(q.object),
        since: q
            .since
            .as_deref()
            .map(|s| parse_rfc3339("since", s))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|s| parse_rfc3339("until", s))
            .transpose()?,
        before_id: q.before,
        limit,
    };
    let entries = st.store.audit(&filter).await?;
    let next_before = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditList {
        entries: entries
            .into_iter()
            .map(|e| AuditView {
                changed: changed_fields(e.before.as_ref(), e.after.as_ref()),
                id: e.id,
                at: rfc3339(e.at),
                actor: e.actor,
                source: e.source,
                action: e.action,
                kind: e.kind,
                object: e.object,
                before: e.before,
                after: e.after,
            })
            .collect(),
        next_before,
    }))
}

#[cfg(test)]
mod tests {
    use super::changed_fields;
    use serde_json::json;

    #[test]
    fn changes_are_named_by_their_dotted_paths() {
        let a = json!({"name": "demo", "restrictions": {"crowdsec_mode": "off", "cidr_allow": ["10.0.0.0/8"]}});
        let b = json!({"name": "demo", "restrictions": {"crowdsec_mode": "enforce", "cidr_allow": ["10.0.0.0/8", "192.0.2.0/24"]}, "tls": {"acme": true}});
        assert_eq!(
            changed_fields(Some(&a), Some(&b)),
            [
                "restrictions.cidr_allow",
                "restrictions.crowdsec_mode",
                "tls"
            ]
        );
        assert_eq!(changed_fields(Some(&a), Some(&a)), Vec::<String>::new());
        assert_eq!(changed_fields(None, Some(&a)), ["name", "restrictions"]);
        assert_eq!(changed_fields(Some(&a), None), ["name", "restrictions"]);
        assert_eq!(changed_fields(None, None), Vec::<String>::new());
    }
}
