//! Secrets the dialects check (Nylas API keys, OneLogin client pairs):
//! configured as [`DialectSecrets`], held as [`SecretSet`], BLAKE3 digests
//! compared in constant time, so no raw secret is kept after start-up.

/// Per-dialect settings the dialects themselves need (credentials to check).
#[derive(Clone, Debug, Default)]
pub struct DialectSecrets {
    /// Nylas: accepted API keys (empty = any non-empty key).
    pub nylas_api_keys: Vec<String>,
    /// OneLogin: accepted (client_id, client_secret) pairs (empty = any pair).
    pub onelogin_clients: Vec<(String, String)>,
}

/// Accepted secrets (API keys, client pairs), kept only as BLAKE3 digests so
/// that every comparison is between equal-length values, in constant time.
#[derive(Clone, Default)]
pub(crate) struct SecretSet {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretSet({} secrets)", self.digests.len())
    }
}

impl SecretSet {
    /// The digest of a secret made of several parts (length-prefixed, so
    /// that `("ab","c")` and `("a","bc")` differ).
    pub(crate) fn digest(parts: &[&[u8]]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }

    /// A set from digests.
    pub(crate) fn new(digests: impl IntoIterator<Item = [u8; 32]>) -> Self {
        SecretSet {
            digests: digests.into_iter().collect(),
        }
    }

    /// No secret configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `candidate` is one of the set, comparing against every member
    /// without an early exit.
    pub(crate) fn contains(&self, candidate: &[u8; 32]) -> bool {
        use subtle::ConstantTimeEq;
        let mut hit = subtle::Choice::from(0u8);
        for digest in &self.digests {
            hit |= digest.ct_eq(candidate);
        }
        hit.into()
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_set() {
        let set = SecretSet::new([
            SecretSet::digest(&[b"ab", b"c"]),
            SecretSet::digest(&[b"k"]),
        ]);
        assert!(set.contains(&SecretSet::digest(&[b"ab", b"c"])));
        assert!(set.contains(&SecretSet::digest(&[b"k"])));
        assert!(!set.contains(&SecretSet::digest(&[b"a", b"bc"])));
        assert!(!set.contains(&SecretSet::digest(&[b"abc"])));
        assert!(!set.is_empty());
        assert!(SecretSet::default().is_empty());
        assert!(!SecretSet::default().contains(&SecretSet::digest(&[b""])));
        assert_eq!(format!("{set:?}"), "SecretSet(2 secrets)");
    }
}
