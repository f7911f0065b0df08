//! The keyed fingerprint that stands for a token everywhere past
//! extraction (store, Redis, logs as a prefix), and the secret key behind
//! it, shared by every instance.
//!
//! An opaque token is named by BLAKE3 (keyed, 128 bits kept) of its bytes; a
//! JWS by SipHash-2-4-128 of its signing input under a derived key
//! ([`FingerprintKey::token_fingerprint`] says why two functions).

use std::fmt;
use std::path::Path;

use super::identity::{token_identity, TokenIdentity};

/// The keyed hash of a raw token: the only form in which a token is stored,
/// logged (as a prefix) or sent to Redis.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 16]);

impl Fingerprint {
    /// Length of the fingerprint in bytes.
    pub const LEN: usize = 16;

    /// Wraps raw fingerprint bytes (as read back from a journal or Redis).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Fingerprint(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The two 64-bit halves; uniformly distributed because the hash is keyed,
    /// so the bloom filter uses them directly instead of hashing again.
    pub fn halves(&self) -> (u64, u64) {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&self.0[..8]);
        b.copy_from_slice(&self.0[8..]);
        (u64::from_le_bytes(a), u64::from_le_bytes(b))
    }

    /// Lower-case hex, 32 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters: what an access log may show.
    pub fn short(&self) -> String {
        String::from_utf8_lossy(&self.short_hex()).into_owned()
    }

    /// [`Fingerprint::short`] without an allocation (the access log's).
    pub fn short_hex(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        // 4 bytes always fit 8 hex characters.
        let _ = hex::encode_to_slice(&self.0[..4], &mut out);
        out
    }

    /// Parses 32 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Fingerprint(out))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Fingerprint::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("fingerprint must be 32 hex characters"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The secret under which tokens are fingerprinted; shared by all instances.
#[derive(Clone)]
pub struct FingerprintKey {
    key: [u8; 32],
    /// The keyed hash of a JWS's signing input: SipHash-2-4 with 128-bit
    /// output under a key derived from `key` (see
    /// [`FingerprintKey::token_fingerprint`]).
    jws: siphasher::sip128::SipHasher24,
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

/// Why a fingerprint key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The configured key is not 64 hex characters.
    #[error("must be 64 hex characters (32 bytes)")]
    BadHex,
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The OS random source failed.
    #[error("random source: {0}")]
    Random(String),
}

impl FingerprintKey {
    fn new(key: [u8; 32]) -> Self {
        let derived = blake3::derive_key("revgate 2026-12 JWS signing-input fingerprint", &key);
        let mut jws_key = [0u8; 16];
        jws_key.copy_from_slice(&derived[..16]);
        FingerprintKey {
            key,
            jws: siphasher::sip128::SipHasher24::new_with_key(&jws_key),
        }
    }

    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        FingerprintKey::new(bytes)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| KeyError::BadHex)?;
        Ok(FingerprintKey::new(out))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut out = [0u8; 32];
        getrandom::fill(&mut out).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(FingerprintKey::new(out))
    }

    /// Reads the key kept at `path`, or generates one and keeps it there
    /// (mode 0600), so that an embedded store's restarts still match.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(s) => Self::from_hex(&s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let tmp = path.with_extension("tmp");
                {
                    use std::io::Write as _;
                    #[cfg(unix)]
                    use std::os::unix::fs::OpenOptionsExt as _;
                    let mut opts = std::fs::OpenOptions::new();
                    opts.write(true).create(true).truncate(true);
                    #[cfg(unix)]
                    opts.mode(0o600);
                    let mut f = opts.open(&tmp).map_err(io)?;
                    f.write_all(hex::encode(key.key).as_bytes()).map_err(io)?;
                    f.sync_all().map_err(io)?;
                }
                std::fs::rename(&tmp, path).map_err(io)?;
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The keyed hash of some bytes. A token's fingerprint is
    /// [`FingerprintKey::token_fingerprint`]: this is its opaque case, and the
    /// building block of other names (JWS signing inputs, `jti`s).
    #[inline]
    pub fn fingerprint(&self, bytes: &[u8]) -> Fingerprint {
        let hash = blake3::keyed_hash(&self.key, bytes);
        let mut out = [0u8; 16];
        out.copy_from_slice(&hash.as_bytes()[..16]);
        Fingerprint(out)
    }

    /// The fingerprint that names a token ([`token_identity`]): its bytes
    /// when opaque, its signing input when a JWS. No allocation.
    ///
    /// The two kinds are hashed by different keyed functions under different
    /// keys, so they never collide but by chance (2^-128). An opaque token's
    /// fingerprint is BLAKE3 (keyed), as it has always been: those names are
    /// in journals and Redis, and a new function would unrevoke them. A
    /// signing input is hundreds of bytes on every JWT request, and BLAKE3
    /// compresses 64 bytes at a time serially at that length (3 compressions
    /// for a usual RS256 signing input, ~2/3 of the verdict's time), so it is
    /// SipHash-2-4 with 128-bit output, the keyed PRF made for short inputs
    /// (about half BLAKE3's time at 180 bytes here; BENCHMARKS.md), under a
    /// 128-bit key derived from the fingerprint key.
    #[inline]
    pub fn token_fingerprint(&self, token: &str) -> Fingerprint {
        match token_identity(token) {
            TokenIdentity::Opaque(t) => self.fingerprint(t.as_bytes()),
            TokenIdentity::Jws(signing_input) => {
                Fingerprint(self.jws.hash(signing_input.as_bytes()).as_bytes())
            }
        }
    }

    /// The id of a token family ([`crate::store::family`]) named by the
    /// session its tokens carry (`sid` under its issuer: OIDC Back-Channel
    /// Logout names a session so), or by an operator's name for it
    /// (`iss = None`).
    pub fn family_fingerprint(&self, iss: Option<&str>, name: &str) -> Fingerprint {
        self.named(b"\0family\0", iss, name)
    }

    /// The fingerprint of a `jti` revocation: the `jti` under one issuer, or
    /// under any (`iss = None`). A JWT is covered by either.
    pub fn jti_fingerprint(&self, iss: Option<&str>, jti: &str) -> Fingerprint {
        self.named(b"\0jti\0", iss, jti)
    }

    /// A name under an issuer (or any), in its own domain.
    fn named(&self, domain: &[u8], iss: Option<&str>, name: &str) -> Fingerprint {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(domain);
        match iss {
            Some(iss) => {
                h.update(&(iss.len() as u64).to_le_bytes());
                h.update(iss.as_bytes());
            }
            None => {
                h.update(&u64::MAX.to_le_bytes());
            }
        }
        h.update(name.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        Fingerprint(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn fingerprint_is_keyed_and_stable() {
        let k1 = FingerprintKey::from_bytes([1; 32]);
        let k2 = FingerprintKey::from_bytes([2; 32]);
        assert_eq!(k1.fingerprint(b"t"), k1.fingerprint(b"t"));
        assert_ne!(k1.fingerprint(b"t"), k2.fingerprint(b"t"));
        assert_ne!(k1.fingerprint(b"t"), k1.fingerprint(b"u"));
        let fp = k1.fingerprint(b"t");
        assert_eq!(Fingerprint::from_hex(&fp.to_hex()), Some(fp));
    }

    #[test]
    fn key_is_kept_beside_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let a = FingerprintKey::load_or_create(&p).unwrap();
        let b = FingerprintKey::load_or_create(&p).unwrap();
        assert_eq!(a.fingerprint(b"x"), b.fingerprint(b"x"));
    }

    /// Fingerprints are stored (journals, Redis, snapshots): the same key
    /// and token must give the same name in every version, whatever a hash
    /// crate's update does. Values computed once and pinned.
    #[test]
    fn fingerprints_are_stable_across_versions() {
        let key = FingerprintKey::from_bytes([0x2a; 32]);
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jws = format!("{}.{}.sig", e(r#"{"alg":"RS256"}"#), e(r#"{"sub":"u"}"#));
        assert_eq!(
            key.token_fingerprint("opaque-token-1").to_hex(),
            OPAQUE_KAT,
            "opaque"
        );
        assert_eq!(key.token_fingerprint(&jws).to_hex(), JWS_KAT, "jws");
    }
    const OPAQUE_KAT: &str = "26840e4ef21d4a1d55c39eed780b738a";
    const JWS_KAT: &str = "d1b6c7ebd5d18949ba6b0c1f50e4dd3b";
}
