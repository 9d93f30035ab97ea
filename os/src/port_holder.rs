//! Who listens on an address that a bind found taken.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// The listener that holds an address, as far as this process may see: `/proc` names the
/// process when it belongs to this user (or to anyone, for root), otherwise only its user id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortHolder(Option<Holder>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Holder {
    Process { pid: i32, name: String },
    User { uid: u32 },
}

impl PortHolder {
    /// Looks the holder up when `error` says the address is in use; nothing otherwise, or
    /// when the socket is not visible (another network namespace, no `/proc`).
    pub fn find(addr: SocketAddr, error: &io::Error) -> Self {
        if error.kind() != io::ErrorKind::AddrInUse {
            return Self::default();
        }
        Self(lookup(addr))
    }

    /// The holding process's pid, when it could be named.
    pub fn pid(&self) -> Option<i32> {
        match &self.0 {
            Some(Holder::Process { pid, .. }) => Some(*pid),
            _ => None,
        }
    }
}

/// Written after the error itself: empty when nothing is known.
impl fmt::Display for PortHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => Ok(()),
            Some(Holder::Process { pid, name }) => write!(f, "; held by {name} (pid {pid})"),
            Some(Holder::User { uid }) => write!(
                f,
                "; held by a process of user id {uid} that this user cannot inspect (`sudo ss -ltnp` names it)"
            ),
        }
    }
}

/// A listening socket on `addr`'s port that a bind to `addr` collides with: the same address,
/// or a wildcard on either side.
fn collides(listening: SocketAddr, addr: SocketAddr) -> bool {
    listening.port() == addr.port()
        && (listening.ip() == addr.ip()
            || listening.ip().is_unspecified()
            || addr.ip().is_unspecified())
}

#[cfg(target_os = "linux")]
fn lookup(addr: SocketAddr) -> Option<Holder> {
    use procfs::net::TcpState;
    use procfs::process::FDTarget;

    let sockets = procfs::net::tcp()
        .into_iter()
        .chain(procfs::net::tcp6())
        .flatten();
    let (inode, uid) = sockets
        .filter(|s| s.state == TcpState::Listen && collides(s.local_address, addr))
        .map(|s| (s.inode, s.uid))
        .next()?;
    for process in procfs::process::all_processes().ok()?.flatten() {
        // Other users' descriptors are unreadable without privilege: skipped.
        let Ok(fds) = process.fd() else { continue };
        let holds = fds
            .flatten()
            .any(|fd| matches!(fd.target, FDTarget::Socket(i) if i == inode));
        if holds {
            let name = process
                .stat()
                .map(|s| s.comm)
                .unwrap_or_else(|_| "a process".into());
            return Some(Holder::Process {
                pid: process.pid,
                name,
            });
        }
    }
    Some(Holder::User { uid })
}

#[cfg(not(target_os = "linux"))]
fn lookup(_: SocketAddr) -> Option<Holder> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_port_this_process_listens_on_names_this_process() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = TcpListener::bind(addr).unwrap_err();
        let holder = PortHolder::find(addr, &err);
        assert_eq!(holder.pid(), Some(std::process::id() as i32));
        let said = holder.to_string();
        assert!(said.starts_with("; held by "), "{said}");
        assert!(
            said.ends_with(&format!("(pid {})", std::process::id())),
            "{said}"
        );
    }

    #[test]
    fn a_wildcard_bind_collides_with_a_loopback_listener() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let wildcard: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
        let err = io::Error::from(io::ErrorKind::AddrInUse);
        assert_eq!(
            PortHolder::find(wildcard, &err).pid(),
            Some(std::process::id() as i32)
        );
    }

    #[test]
    fn other_errors_and_free_ports_say_nothing() {
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let in_use = io::Error::from(io::ErrorKind::AddrInUse);
        assert_eq!(PortHolder::find(free, &in_use), PortHolder::default());
        assert_eq!(PortHolder::find(free, &in_use).to_string(), "");
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        assert_eq!(PortHolder::find(addr, &denied), PortHolder::default());
    }

    #[test]
    fn collisions_follow_the_address_rules() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(collides(a("127.0.0.1:80"), a("127.0.0.1:80")));
        assert!(collides(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(collides(a("[::]:80"), a("127.0.0.1:80")));
        assert!(!collides(a("127.0.0.1:80"), a("127.0.0.2:80")));
        assert!(!collides(a("127.0.0.1:81"), a("127.0.0.1:80")));
    }
}
