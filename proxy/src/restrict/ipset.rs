//! A compiled set of CIDR ranges: sorted, merged intervals per family, searched by bisection.
//! Built once per config change; `contains` never allocates.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    pub fn new<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// `addr` must already be canonical (IPv4-mapped IPv6 turned into IPv4).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => covered(&self.v4, u32::from(a)),
            IpAddr::V6(a) => covered(&self.v6, u128::from(a)),
        }
    }
}

fn merge<T: Ord + Copy + num_like::Succ>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            // Overlapping or adjacent: extend the previous interval.
            Some(last) if last.1.succ().is_none_or(|next| start <= next) => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => out.push((start, end)),
        }
    }
    out.shrink_to_fit();
    out
}

fn covered<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // Index of the first interval starting after x; the candidate is the one before it.
    let idx = ranges.partition_point(|&(start, _)| start <= x);
    idx > 0 && x <= ranges[idx - 1].1
}

mod num_like {
    pub trait Succ: Sized {
        fn succ(self) -> Option<Self>;
    }
    impl Succ for u32 {
        fn succ(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
    impl Succ for u128 {
        fn succ(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> IpSet {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        IpSet::new(&nets)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn matches_both_families_and_edges() {
        let s = set(&["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
        assert!(s.contains(ip("10.0.0.0")));
        assert!(s.contains(ip("10.255.255.255")));
        assert!(!s.contains(ip("11.0.0.0")));
        assert!(!s.contains(ip("9.255.255.255")));
        assert!(s.contains(ip("192.0.2.7")));
        assert!(!s.contains(ip("192.0.2.8")));
        assert!(s.contains(ip("2001:db8:ffff::1")));
        assert!(!s.contains(ip("2001:db9::")));
        // Families never cross.
        assert!(!s.contains(ip("::a00:1")));
    }

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let s = set(&["10.0.0.0/25", "10.0.0.128/25", "10.0.0.64/26", "0.0.0.0/0"]);
        assert_eq!(s.v4, vec![(0, u32::MAX)]);
        let s = set(&["10.0.0.0/25", "10.0.0.128/25"]);
        assert_eq!(s.v4.len(), 1);
        assert!(s.contains(ip("10.0.0.200")));
        let s = set(&["::/0", "2001:db8::/32"]);
        assert_eq!(s.v6, vec![(0, u128::MAX)]);
    }

    #[test]
    fn empty_set_contains_nothing() {
        let s = IpSet::default();
        assert!(s.is_empty());
        assert!(!s.contains(ip("0.0.0.0")));
        assert!(!s.contains(ip("::")));
    }
}
