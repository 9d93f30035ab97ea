//! Tokens: random, shown once, stored only as SHA-256 hashes. Tokens are 256 random bits, so a
//! fast hash is enough (nothing to brute-force); a salted slow hash would only cost latency.

use sha2::{Digest, Sha256};

/// Admin tokens start with this, so that an operator can tell the two kinds apart.
pub const ADMIN_TOKEN_PREFIX: &str = "nba_";
pub const PROXY_TOKEN_PREFIX: &str = "nbp_";
/// An admin token set by the operator must be at least this long.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).expect("the operating system's random source failed");
    hex(&buf)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

pub fn generate_token(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(32))
}

/// A short random identifier for records.
pub fn generate_id() -> String {
    random_hex(8)
}

pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Compares without an early exit, so timing does not tell how much of a hash matched.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hash_stably() {
        let a = generate_token(PROXY_TOKEN_PREFIX);
        let b = generate_token(PROXY_TOKEN_PREFIX);
        assert!(a.starts_with("nbp_") && a.len() == 4 + 64);
        assert_ne!(a, b);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert!(!hash_token(&a).contains(&a[4..]));
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hash_comparison() {
        assert!(same_hash("abcd", "abcd"));
        assert!(!same_hash("abcd", "abce"));
        assert!(!same_hash("abcd", "abc"));
    }
}
