//! The event log as a file: every event the filters match, newest first, as CSV or JSON
//! lines, streamed page by page so that memory stays flat however many match.

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::Viewer;
use super::events::{filter_of, EventQuery, EventView};
use super::{ApiError, AppState, ErrorBody};
use crate::store::{EventFilter, Store};

/// Events read from the store per page of the export.
const PAGE: u32 = 1000;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One row per event, with a header row; metadata as a JSON cell.
    Csv,
    /// One event object per line, as `GET /api/v1/events` shows them.
    Jsonl,
}

/// Besides the event filters (kept apart: a flattened query reads numbers as strings).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `csv` or `jsonl`.
    #[param(inline)]
    pub format: ExportFormat,
}

const COLUMNS: [&str; 15] = [
    "id",
    "ts",
    "proxy_id",
    "service_id",
    "protocol",
    "source_ip",
    "host",
    "method",
    "path",
    "status",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "verdict",
    "metadata",
];

#[utoipa::path(get, path = "/api/v1/events/export", operation_id = "export_events", tag = "events",
    security(("admin" = []), ("session" = [])),
    params(ExportQuery, EventQuery),
    responses((status = 200, description = "text/csv or application/x-ndjson, as an attachment"),
        (status = 400, body = ErrorBody)))]
pub async fn export(
    _: Viewer,
    State(st): State<AppState>,
    Query(q): Query<ExportQuery>,
    Query(filters): Query<EventQuery>,
) -> Result<Response, ApiError> {
    if filters.cursor.is_some() || filters.limit.is_some() {
        return Err(ApiError::BadRequest(
            "cursor and limit do not apply to an export: it holds every matching event".into(),
        ));
    }
    let mut filter = filter_of(filters)?;
    filter.limit = PAGE;
    let format = q.format;
    // The first page is read before answering, so that a store error is a status, not a
    // truncated file.
    let first = page(&st.store, &filter, format, true).await?;
    let body = futures_util::stream::unfold(Some((st.store.clone(), first)), move |state| {
        let format = format;
        async move {
            let (store, (bytes, next)) = state?;
            let Some(filter) = next else {
                return Some((Ok::<_, std::io::Error>(bytes), None));
            };
            match page(&store, &filter, format, false).await {
                Ok(more) => Some((Ok(bytes), Some((store, more)))),
                // Cut the stream: the client sees an incomplete transfer, not a short file.
                Err(e) => {
                    tracing::warn!(error = ?e, "event export cut short: the store failed");
                    Some((Err(std::io::Error::other("the store failed")), None))
                }
            }
        }
    });
    let (kind, name) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "events.csv"),
        ExportFormat::Jsonl => ("application/x-ndjson", "events.jsonl"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// One page rendered, and the filter for the next page when older events match.
async fn page(
    store: &Store,
    filter: &EventFilter,
    format: ExportFormat,
    first: bool,
) -> Result<(Bytes, Option<EventFilter>), ApiError> {
    let page = store.events(filter).await?;
    let mut out = String::new();
    if first && format == ExportFormat::Csv {
        out.push_str(&COLUMNS.join(","));
        out.push_str("\r\n");
    }
    for e in page.events {
        let view = EventView::from(e);
        match format {
            ExportFormat::Jsonl => {
                out.push_str(&serde_json::to_string(&view).expect("an event serialises"));
                out.push('\n');
            }
            ExportFormat::Csv => csv_row(&mut out, &view),
        }
    }
    let next = page.next.map(|cursor| EventFilter {
        after: Some(cursor),
        ..filter.clone()
    });
    Ok((Bytes::from(out), next))
}

fn csv_row(out: &mut String, e: &EventView) {
    let l = &e.line;
    let json = serde_json::to_value(e).expect("an event serialises");
    let text = |k: &str| match &json[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        v => v.to_string(),
    };
    let verdict = l.deny_reason.map_or("allow", |v| v.as_str()).to_owned();
    let cells = [
        e.id.to_string(),
        text("ts"),
        e.proxy_id.clone(),
        l.service_id.to_string(),
        text("protocol"),
        l.source_ip.to_string(),
        text("host"),
        text("method"),
        text("path"),
        l.status.map(|s| s.to_string()).unwrap_or_default(),
        l.duration_ms.to_string(),
        l.bytes_in.to_string(),
        l.bytes_out.to_string(),
        verdict,
        json["metadata"].to_string(),
    ];
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(out, cell);
    }
    out.push_str("\r\n");
}

/// RFC 4180 quoting, and a leading `'` on text a spreadsheet would run as a formula: hosts
/// and paths come from clients, and a cell such as `=HYPERLINK(...)` must stay text.
fn csv_cell(out: &mut String, cell: &str) {
    let formula =
        cell.starts_with(['=', '+', '-', '@', '\t', '\r']) && cell.parse::<f64>().is_err();
    let quote = formula || cell.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in cell.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    fn cell(s: &str) -> String {
        let mut out = String::new();
        csv_cell(&mut out, s);
        out
    }

    #[test]
    fn cells_are_quoted_and_formulas_stay_text() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(cell("-3.5"), "-3.5", "a negative number is a number");
        assert_eq!(cell(""), "");
    }
}
