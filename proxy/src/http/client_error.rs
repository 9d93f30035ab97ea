//! Requests the proxy answers itself because the client got something wrong. Each is answered
//! with its status and written to the access log as `metadata.client_error`.

use std::fmt;

use http::StatusCode;

/// Always on the client's side of the connection; retrying the same request cannot help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    HostConflict,
    MultipleHosts,
    MissingHost,
    InvalidHost,
    ConnectNotAllowed,
    Malformed,
    HeadTooLarge,
    HeaderTimeout,
    BodyTooSlow,
    /// Dot segments, encoded slashes or backslashes on a host routed by path prefix.
    AmbiguousPath,
}

impl ClientError {
    pub const fn status(self) -> StatusCode {
        match self {
            ClientError::ConnectNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ClientError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ClientError::HeaderTimeout | ClientError::BodyTooSlow => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The access log's `metadata.client_error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClientError::HostConflict => {
                "the request target and the Host header name different hosts"
            }
            ClientError::MultipleHosts => "more than one Host header",
            ClientError::MissingHost => "no Host header",
            ClientError::InvalidHost => "the Host header is not a host[:port]",
            ClientError::ConnectNotAllowed => "CONNECT is not supported",
            ClientError::Malformed => "malformed request",
            ClientError::HeadTooLarge => "request head too large",
            ClientError::HeaderTimeout => "request head not received in time",
            ClientError::BodyTooSlow => "request body too slow",
            ClientError::AmbiguousPath => "the path has dot segments or encoded slashes",
        }
    }

    /// The body of the proxy's answer.
    pub const fn body(self) -> &'static str {
        match self.status() {
            StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed\n",
            StatusCode::REQUEST_TIMEOUT => "Request Timeout\n",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "Request Header Fields Too Large\n",
            _ => "Bad Request\n",
        }
    }

    /// What hyper answered on its own when a connection ended with `e`, if anything.
    pub fn of_hyper(e: &hyper::Error) -> Option<Self> {
        if e.is_parse_too_large() {
            Some(ClientError::HeadTooLarge)
        } else if e.is_parse() {
            Some(ClientError::Malformed)
        } else {
            None
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for ClientError {}
