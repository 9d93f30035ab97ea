//! Who gets a connection slot: a global cap and a cap per client address, checked at accept,
//! before any byte is read or any TLS handshake costs anything. A slot is held by a [`Permit`]
//! for as long as the connection (or its upgraded tunnel) lives.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const SHARDS: usize = 32;

/// Why a connection was refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` connections are open.
    Global,
    /// `--max-connections-per-ip` connections are open from this client.
    PerIp,
    /// The TCP service's `max_connections` are open.
    Service,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::Global, Refusal::PerIp, Refusal::Service];

    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::Global => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
            Refusal::Service => "service_max_connections",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The per-address key: an IPv4 address, or the /64 an IPv6 address is in (one host usually
/// holds a whole /64, so counting single IPv6 addresses would count nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IpKey {
    V4(u32),
    V6(u64),
}

impl IpKey {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => IpKey::V4(v4.into()),
            IpAddr::V6(v6) => IpKey::V6((u128::from(v6) >> 64) as u64),
        }
    }

    fn shard(self) -> usize {
        let h = match self {
            IpKey::V4(v) => u64::from(v),
            IpKey::V6(v) => v,
        };
        // Fibonacci hashing: neighbouring addresses land in different shards.
        (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59) as usize % SHARDS
    }
}

pub struct Admission {
    /// 0 = no limit.
    max: usize,
    /// 0 = no limit.
    per_ip: u32,
    active: AtomicUsize,
    by_ip: [Mutex<HashMap<IpKey, u32>>; SHARDS],
    refused: [AtomicU64; 3],
    head_timeouts: AtomicU64,
}

impl Admission {
    pub fn new(max: usize, per_ip: u32) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_ip,
            active: AtomicUsize::new(0),
            by_ip: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            refused: Default::default(),
            head_timeouts: AtomicU64::new(0),
        })
    }

    /// A connection closed because its first request head did not arrive in time.
    pub fn count_head_timeout(&self) {
        self.head_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn head_timeouts(&self) -> u64 {
        self.head_timeouts.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Open connections holding a slot.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Connections refused for `reason` since start.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn count_refusal(&self, reason: Refusal) {
        self.refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A global slot, and a slot for `client` unless it is `None` (a trusted peer whose real
    /// clients are known only later, see [`Permit::bind_client`]).
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Permit, Refusal> {
        let n = self.active.fetch_add(1, Ordering::AcqRel) + 1;
        let mut permit = Permit {
            admission: self.clone(),
            key: None,
        };
        if self.max > 0 && n > self.max {
            drop(permit);
            self.count_refusal(Refusal::Global);
            return Err(Refusal::Global);
        }
        if let Some(ip) = client {
            permit.bind_client(ip)?;
        }
        Ok(permit)
    }

    fn take_ip(&self, key: IpKey) -> bool {
        if self.per_ip == 0 {
            return true;
        }
        let mut shard = self.by_ip[key.shard()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n = shard.entry(key).or_insert(0);
        if *n >= self.per_ip {
            return false;
        }
        *n += 1;
        true
    }

    fn release_ip(&self, key: IpKey) {
        let mut shard = self.by_ip[key.shard()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = shard.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                shard.remove(&key);
            }
        }
    }

    /// Addresses currently holding per-address slots.
    #[cfg(test)]
    fn tracked_addresses(&self) -> usize {
        self.by_ip
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// A connection's slot; released when dropped.
pub struct Permit {
    admission: Arc<Admission>,
    key: Option<IpKey>,
}

impl Permit {
    /// Counts the connection against `client` too (once: later calls change nothing). Called
    /// at accept for ordinary peers, and after a trusted peer's PROXY header named the client.
    pub fn bind_client(&mut self, client: IpAddr) -> Result<(), Refusal> {
        if self.key.is_some() || self.admission.per_ip == 0 {
            return Ok(());
        }
        let key = IpKey::of(client);
        if !self.admission.take_ip(key) {
            self.admission.count_refusal(Refusal::PerIp);
            return Err(Refusal::PerIp);
        }
        self.key = Some(key);
        Ok(())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.admission.release_ip(key);
        }
        self.admission.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One TCP service's connection count, kept by its listener across reloads.
#[derive(Debug, Default)]
pub struct ServiceSlots(AtomicUsize);

impl ServiceSlots {
    #[cfg(test)]
    fn active(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// A slot if fewer than `max` are taken (`None` = no cap).
    pub fn take(self: &Arc<Self>, max: Option<u32>) -> Option<ServicePermit> {
        let n = self.0.fetch_add(1, Ordering::AcqRel) + 1;
        let permit = ServicePermit(self.clone());
        match max {
            Some(max) if n > max as usize => None,
            _ => Some(permit),
        }
    }
}

pub struct ServicePermit(Arc<ServiceSlots>);

impl Drop for ServicePermit {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn global_cap_counts_and_frees() {
        let a = Admission::new(2, 0);
        let p1 = a.admit(Some(ip("192.0.2.1"))).unwrap();
        let _p2 = a.admit(None).unwrap();
        assert_eq!(a.admit(Some(ip("192.0.2.3"))).err(), Some(Refusal::Global));
        assert_eq!(a.active(), 2, "a refusal holds no slot");
        drop(p1);
        assert!(a.admit(Some(ip("192.0.2.3"))).is_ok());
        assert_eq!(a.refused(Refusal::Global), 1);
    }

    #[test]
    fn per_address_cap_with_ipv6_by_64_and_mapped_addresses() {
        let a = Admission::new(0, 2);
        let p1 = a.admit(Some(ip("192.0.2.1"))).unwrap();
        let _p2 = a.admit(Some(ip("::ffff:192.0.2.1"))).unwrap();
        assert_eq!(a.admit(Some(ip("192.0.2.1"))).err(), Some(Refusal::PerIp));
        assert_eq!(a.active(), 2, "the refused one gave its global slot back");
        assert!(a.admit(Some(ip("192.0.2.2"))).is_ok(), "another address");
        let _v1 = a.admit(Some(ip("2001:db8:1:2::1"))).unwrap();
        let _v2 = a.admit(Some(ip("2001:db8:1:2:ffff::9"))).unwrap();
        assert_eq!(
            a.admit(Some(ip("2001:db8:1:2::3"))).err(),
            Some(Refusal::PerIp),
            "same /64"
        );
        assert!(a.admit(Some(ip("2001:db8:1:3::1"))).is_ok());
        drop(p1);
        assert!(a.admit(Some(ip("192.0.2.1"))).is_ok());
        assert_eq!(a.refused(Refusal::PerIp), 2);
    }

    #[test]
    fn released_addresses_are_forgotten() {
        let a = Admission::new(0, 10);
        let permits: Vec<_> = (0..100)
            .map(|i| {
                a.admit(Some(ip(&format!("10.0.{}.{}", i / 256, i % 256))))
                    .unwrap()
            })
            .collect();
        assert_eq!(a.tracked_addresses(), 100);
        drop(permits);
        assert_eq!(a.tracked_addresses(), 0);
        assert_eq!(a.active(), 0);
    }

    #[test]
    fn a_trusted_peer_is_bound_to_its_real_client_later() {
        let a = Admission::new(0, 1);
        let mut p = a.admit(None).unwrap();
        p.bind_client(ip("198.51.100.1")).unwrap();
        p.bind_client(ip("198.51.100.2")).unwrap();
        let mut q = a.admit(None).unwrap();
        assert_eq!(q.bind_client(ip("198.51.100.1")), Err(Refusal::PerIp));
        assert!(
            a.admit(Some(ip("198.51.100.2"))).is_ok(),
            "only the first binding counts"
        );
    }

    #[test]
    fn service_slots() {
        let s = Arc::new(ServiceSlots::default());
        let a = s.take(Some(1)).unwrap();
        assert!(s.take(Some(1)).is_none());
        assert_eq!(s.active(), 1);
        assert!(s.take(None).is_some());
        drop(a);
        assert!(s.take(Some(1)).is_some());
    }
}
