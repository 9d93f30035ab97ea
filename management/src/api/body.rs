//! JSON bodies whose errors name the field (`restrictions.crowdsec_mode: unknown variant …`).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::ApiError;
use crate::validate::FieldProblem;

pub struct JsonBody<T>(pub T);

/// A body as bytes, within the route's limit: over it, 413 in the API's error format.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge(format!("the request body is too large: {e}"))
                } else {
                    ApiError::BadRequest(format!("cannot read the request body: {e}"))
                }
            })
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        match decode_all(&bytes)? {
            Ok(v) => Ok(JsonBody(v)),
            Err(undecoded) => Err(ApiError::invalid(undecoded.problems)),
        }
    }
}

/// A JSON body whose field problems reach the handler, which may add its own checks of what
/// did parse: one 422 then names every problem.
pub struct CheckedBody<T>(pub Result<T, Undecoded<T>>);

/// A body with fields of the wrong type or shape.
pub struct Undecoded<T> {
    /// Each such field, named by its path.
    pub problems: Vec<FieldProblem>,
    /// The body without those fields, when it still decodes (none of them was required).
    pub rest: Option<T>,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for CheckedBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        Ok(CheckedBody(decode_all(&bytes)?))
    }
}

/// The problems of fields that did not decode, then the handler's own checks of fields not
/// already reported (a dropped field reads as its default there).
pub fn with_checks(mut reported: Vec<FieldProblem>, more: Vec<FieldProblem>) -> Vec<FieldProblem> {
    let seen: Vec<String> = reported.iter().map(|p| p.field.clone()).collect();
    reported.extend(more.into_iter().filter(|p| !seen.contains(&p.field)));
    reported
}

/// At most this many field problems are reported for one body.
const MAX_PROBLEMS: usize = 50;

/// Decodes `bytes` as `T`, collecting every field problem rather than the first: a field that
/// fails is recorded and dropped from the JSON, and decoding starts again. Not JSON at all is
/// a 400.
fn decode_all<T: DeserializeOwned>(bytes: &[u8]) -> Result<Result<T, Undecoded<T>>, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let mut problems = Vec::new();
    loop {
        let e = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(v) if problems.is_empty() => return Ok(Ok(v)),
            Ok(v) => {
                let rest = Some(v);
                return Ok(Err(Undecoded { problems, rest }));
            }
            Err(e) => e,
        };
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        let path = e.path().to_string();
        let message = strip_position(&e.into_inner().to_string()).to_owned();
        let field = match (missing_field(&message), path.as_str()) {
            (Some(name), ".") => name.to_owned(),
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, ".") => "body".to_owned(),
            (None, path) => path.to_owned(),
        };
        // When a required field is missing because it was dropped, its first problem says why.
        // Its object is dropped next, so that the rest of the body is still checked; at the top
        // level nothing more can be learnt.
        let missing = missing_field(&message).is_some();
        let unknown = unknown_field(&message).map(str::to_owned);
        if !(missing && problems.iter().any(|p: &FieldProblem| p.field == field)) {
            problems.push(FieldProblem::new(&field, message));
        }
        let dropped = if missing {
            !segments.is_empty() && drop_at(&mut value, &segments, None)
        } else {
            drop_at(&mut value, &segments, unknown.as_deref())
        };
        if !dropped || problems.len() >= MAX_PROBLEMS {
            return Ok(Err(Undecoded {
                problems,
                rest: None,
            }));
        }
    }
}

/// Removes the value at `path`, or for an unknown field whose path ends at its object, that
/// object's key `unknown`. False when there is nothing to remove, so that decoding cannot loop.
fn drop_at(value: &mut serde_json::Value, path: &[Segment], unknown: Option<&str>) -> bool {
    let mut at = value;
    let names_unknown =
        matches!(path.last(), Some(Segment::Map { key }) if Some(key.as_str()) == unknown);
    let (parent, last) = match (unknown, path.split_last()) {
        (Some(_), _) if !names_unknown => (path, None),
        (_, Some((last, parent))) => (parent, Some(last)),
        (_, None) => return false,
    };
    for segment in parent {
        at = match segment {
            Segment::Map { key } => match at.get_mut(key.as_str()) {
                Some(v) => v,
                None => return false,
            },
            Segment::Seq { index } => match at.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            Segment::Enum { .. } => at,
            Segment::Unknown => return false,
        };
    }
    match (last, unknown, at) {
        (None, Some(key), serde_json::Value::Object(m)) => m.remove(key).is_some(),
        (Some(Segment::Map { key }), _, serde_json::Value::Object(m)) => {
            m.remove(key.as_str()).is_some()
        }
        (Some(Segment::Seq { index }), _, serde_json::Value::Array(a)) if *index < a.len() => {
            a.remove(*index);
            true
        }
        _ => false,
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// serde_json appends "at line 1 column 42"; the field path already locates the problem.
fn strip_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}
