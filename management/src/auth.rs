//! Tokens: random, shown once, stored only as hashes. Generated tokens are 256 random bits, so
//! SHA-256 is enough (nothing to brute-force). An admin token the operator chose may be weak, so
//! it is stored as a salted argon2id hash; a verified token is remembered (as a SHA-256 digest in
//! memory) so that only the first request pays for argon2.

use sha2::{Digest, Sha256};

/// Admin tokens start with this, so that an operator can tell the two kinds apart.
pub const ADMIN_TOKEN_PREFIX: &str = "nba_";
pub const PROXY_TOKEN_PREFIX: &str = "nbp_";
/// Personal API tokens of users.
pub const USER_TOKEN_PREFIX: &str = "nbu_";
/// Session cookies.
pub const SESSION_PREFIX: &str = "nbs_";
/// Users' passwords must be at least this long.
pub const MIN_PASSWORD_LEN: usize = 12;
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

/// How the admin token is stored: SHA-256 hex for generated tokens, an argon2id PHC string
/// (`$argon2id$…`) for operator-chosen ones. Users' passwords are stored the same way.
pub fn hash_chosen_token(token: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).expect("the operating system's random source failed");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a valid salt");
    argon2::Argon2::default()
        .hash_password(token.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

/// The admin token's stored hash, and the digest of a token already verified against it.
pub struct AdminCredential {
    stored: String,
    verified: std::sync::Mutex<Option<String>>,
}

impl AdminCredential {
    pub fn new(stored: impl Into<String>) -> Self {
        Self {
            stored: stored.into(),
            verified: std::sync::Mutex::new(None),
        }
    }

    fn is_argon2(&self) -> bool {
        self.stored.starts_with("$argon2")
    }

    /// Whether `token` is the admin token. argon2 runs on a blocking thread, once per process
    /// for the right token (then the cache answers), and for every wrong one (the caller rate
    /// limits failures).
    pub async fn verify(&self, token: &str) -> bool {
        let digest = hash_token(token);
        if !self.is_argon2() {
            return same_hash(&digest, &self.stored);
        }
        let cached = self.verified.lock().map(|v| v.clone()).unwrap_or(None);
        if cached.is_some_and(|c| same_hash(&c, &digest)) {
            return true;
        }
        let ok = verify_argon2(self.stored.clone(), token.to_owned()).await;
        if ok {
            if let Ok(mut v) = self.verified.lock() {
                *v = Some(digest);
            }
        }
        ok
    }
}

pub fn hash_password(password: &str) -> String {
    hash_chosen_token(password)
}

/// Whether `secret` matches the argon2 PHC string `stored`, on a blocking thread (argon2 takes
/// tens of milliseconds on purpose).
pub async fn verify_argon2(stored: String, secret: String) -> bool {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        PasswordHash::new(&stored).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// Checks `password` against a hash of nothing anyone knows, so that signing in as a user who
/// does not exist takes as long as with a wrong password.
pub async fn verify_nobody(password: &str) {
    static NOBODY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stored = NOBODY
        .get_or_init(|| hash_password(&random_hex(16)))
        .clone();
    verify_argon2(stored, password.to_owned()).await;
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

    #[tokio::test]
    async fn chosen_tokens_are_salted_argon2_and_verify() {
        let a = hash_chosen_token("correct horse battery");
        let b = hash_chosen_token("correct horse battery");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(!a.contains("correct"));
        let cred = AdminCredential::new(a);
        assert!(!cred.verify("wrong").await);
        assert!(cred.verify("correct horse battery").await);
        assert!(cred.verify("correct horse battery").await, "from the cache");
        assert!(!cred.verify("wrong").await);
        let generated = generate_token(ADMIN_TOKEN_PREFIX);
        let cred = AdminCredential::new(hash_token(&generated));
        assert!(cred.verify(&generated).await);
        assert!(!cred.verify("nba_other").await);
    }

    #[test]
    fn hash_comparison() {
        assert!(same_hash("abcd", "abcd"));
        assert!(!same_hash("abcd", "abce"));
        assert!(!same_hash("abcd", "abc"));
    }
}
