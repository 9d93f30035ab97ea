//! An address's text, written without `fmt`: an access-log line and a connection's
//! `x-forwarded-for` value are written for every request or connection, and std's `Display`
//! for an IPv4 address costs about a thousand instructions.

use std::io::Write;
use std::net::IpAddr;

/// Room for the longest IPv6 text (45 bytes).
pub struct IpText {
    bytes: [u8; 48],
}

impl Default for IpText {
    fn default() -> Self {
        Self { bytes: [0; 48] }
    }
}

impl IpText {
    /// `ip` as `Display` writes it.
    pub fn format(&mut self, ip: IpAddr) -> &[u8] {
        match ip {
            IpAddr::V4(v4) => {
                let mut n = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.bytes[n] = b'.';
                        n += 1;
                    }
                    let mut digits = itoa::Buffer::new();
                    let text = digits.format(octet).as_bytes();
                    self.bytes[n..n + text.len()].copy_from_slice(text);
                    n += text.len();
                }
                &self.bytes[..n]
            }
            IpAddr::V6(v6) => {
                // Rarer; std's canonical form (RFC 5952).
                let mut w = &mut self.bytes[..];
                let _ = write!(w, "{v6}");
                let left = w.len();
                &self.bytes[..48 - left]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn it_writes_what_display_writes(v4: u32, v6: u128) {
            for ip in [IpAddr::V4(Ipv4Addr::from(v4)), IpAddr::V6(Ipv6Addr::from(v6))] {
                let mut text = IpText::default();
                let display = ip.to_string();
                prop_assert_eq!(text.format(ip), display.as_bytes());
            }
        }
    }

    #[test]
    fn the_longest_forms_fit() {
        for ip in [
            "255.255.255.255",
            "::ffff:255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut text = IpText::default();
            assert_eq!(text.format(ip), ip.to_string().as_bytes());
        }
    }
}
