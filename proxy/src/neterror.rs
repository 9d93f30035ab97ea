//! What went wrong on the network, read once for every client the proxy has: the LAPI client,
//! the management client and the upstream dialler. Each turns it into its own words and keeps
//! its own retry rule.

use std::error::Error;
use std::io;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetFailure {
    HostNotFound,
    Refused,
    Timeout,
    /// The peer's certificate was not trusted; rustls' reason.
    Tls(String),
    /// Reset, or closed before the answer was complete.
    Reset,
    /// Anything else: the error chain in its own words.
    Other(String),
}

impl NetFailure {
    /// Reads `e` and its sources: typed errors first (I/O kinds, rustls, reqwest timeouts),
    /// then the words of resolvers and HTTP clients that have no type of their own.
    pub fn of(e: &(dyn Error + 'static)) -> Self {
        let mut source = Some(e);
        let mut text = String::new();
        while let Some(err) = source {
            // TLS streams carry rustls' error inside an I/O error.
            let io = err.downcast_ref::<io::Error>();
            let inner = io
                .and_then(|io| io.get_ref())
                .map(|i| i as &(dyn Error + 'static));
            for e in [Some(err), inner].into_iter().flatten() {
                if let Some(rustls::Error::InvalidCertificate(c)) =
                    e.downcast_ref::<rustls::Error>()
                {
                    return NetFailure::Tls(format!("{c:?}"));
                }
            }
            if err
                .downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_timeout)
            {
                return NetFailure::Timeout;
            }
            if let Some(failure) = io.and_then(of_io_kind) {
                return failure;
            }
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&err.to_string());
            source = err.source();
        }
        let lower = text.to_ascii_lowercase();
        if lower.contains("dns error") || lower.contains("failed to lookup address") {
            NetFailure::HostNotFound
        } else if lower.contains("invalid peer certificate") {
            NetFailure::Tls("invalid peer certificate".into())
        } else if lower.contains("connection closed before message completed")
            || lower.contains("error decoding response body")
            || lower.contains("incomplete")
        {
            NetFailure::Reset
        } else if lower.contains("connection refused") {
            NetFailure::Refused
        } else {
            NetFailure::Other(text)
        }
    }
}

fn of_io_kind(e: &io::Error) -> Option<NetFailure> {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => Some(NetFailure::Refused),
        TimedOut => Some(NetFailure::Timeout),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => Some(NetFailure::Reset),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that wraps another, as HTTP clients and connectors do.
    #[derive(Debug)]
    struct Wrapped(&'static str, Box<dyn Error + Send + Sync>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.1)
        }
    }

    fn wrapped(outer: &'static str, inner: impl Error + Send + Sync + 'static) -> Wrapped {
        Wrapped(outer, Box::new(inner))
    }

    #[test]
    fn io_kinds_anywhere_in_the_chain() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(NetFailure::of(&refused), NetFailure::Refused);
        let deep = wrapped(
            "client error (Connect)",
            wrapped("tcp connect error", refused),
        );
        assert_eq!(NetFailure::of(&deep), NetFailure::Refused);
        let timed_out = wrapped("request failed", io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(NetFailure::of(&timed_out), NetFailure::Timeout);
        for kind in [io::ErrorKind::ConnectionReset, io::ErrorKind::UnexpectedEof] {
            assert_eq!(NetFailure::of(&io::Error::from(kind)), NetFailure::Reset);
        }
    }

    #[test]
    fn resolvers_and_clients_by_their_words() {
        // What std's resolver says for a name that does not resolve.
        let dns =
            io::Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(NetFailure::of(&dns), NetFailure::HostNotFound);
        let hyper = wrapped("dns error", io::Error::other("no record"));
        assert_eq!(NetFailure::of(&hyper), NetFailure::HostNotFound);
        let cut = io::Error::other("connection closed before message completed");
        assert_eq!(NetFailure::of(&cut), NetFailure::Reset);
        let other = wrapped(
            "builder error",
            io::Error::other("relative URL without a base"),
        );
        assert_eq!(
            NetFailure::of(&other),
            NetFailure::Other("builder error: relative URL without a base".into())
        );
    }

    #[test]
    fn untrusted_certificates_keep_rustls_reason() {
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let chain = wrapped("client error (Connect)", io::Error::other(bad));
        assert_eq!(
            NetFailure::of(&chain),
            NetFailure::Tls("UnknownIssuer".into())
        );
    }
}
