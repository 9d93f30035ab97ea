//! Ports for what must be named before a process starts (a TCP service's `listen`, the LAPI's
//! `listen_uri`, a management URL that survives a restart). Everything that can listen on port
//! 0 does, and says where through its ready file (see [`crate::binaries`]).
//!
//! Like sozu's e2e port registry: each port is handed out once per test process and probed by
//! binding. They come from below the kernel's ephemeral range (32768+), so a port-0 listener of
//! a running proxy can never take a port a test has reserved; each test process starts at its
//! own offset so that two suites running at once rarely probe the same ports.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u32 = 20_000;
const COUNT: u32 = 12_000;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A loopback port no other test of this process was given, free when probed.
pub fn reserve_port() -> u16 {
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % COUNT,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::AcqRel) % COUNT) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port left in {FIRST}..{}", FIRST + COUNT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_the_same_port_twice() {
        let ports: Vec<u16> = (0..500).map(|_| reserve_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        assert!(
            ports.iter().all(|p| (20_000..32_000).contains(p)),
            "{ports:?}"
        );
    }

    #[test]
    fn a_port_in_use_is_skipped() {
        let taken = reserve_port();
        let _held = TcpListener::bind((Ipv4Addr::LOCALHOST, taken + 1)).ok();
        let next = reserve_port();
        assert_ne!(next, taken + 1, "the held port was probed and skipped");
    }
}
