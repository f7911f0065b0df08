//! The bloom snapshot: one Redis value (`{P}:snapshot`) from which a
//! starting instance installs its bloom filter and scope rules without
//! scanning every key, then tails the stream from the id the snapshot
//! records.
//!
//! Layout (integers little-endian), a fixed header then the body:
//!
//! ```text
//!   0  magic "RGSNAP"          6     36  capacity       u64
//!   6  version u16 (= 1)       2     44  token_rules    u64
//!   8  stream id ms  u64       8     52  words          u64 (count)
//!  16  stream id seq u64       8     60  scopes_len     u64 (bytes)
//!  24  bits u64                8     68  checksum       16 (blake3 of the body, truncated)
//!  32  hashes u32              4     84  body: words × u64, then scopes_len bytes of
//!                                          JSON (Vec<ScopeRule>)
//! ```
//!
//! The stream id is the stream's last id noted *before* the scan the
//! snapshot was built from began, so every change after it is in the
//! stream (or, if trimmed, the reader notices and scans instead). The bloom
//! holds fingerprints only, never a raw token. A value that fails any check
//! (magic, version, sizes, checksum, JSON) is ignored.

use super::keys::EventId;
use crate::store::cache::AtomicBloom;
use crate::store::ScopeRule;

const MAGIC: &[u8; 6] = b"RGSNAP";
const VERSION: u16 = 1;
/// Bytes of header, before the body.
pub const HEADER_LEN: usize = 84;
/// Sanity bounds on what a header may claim (4 GiB of bits, 64 MiB of scopes).
const MAX_WORDS: u64 = 1 << 29;
const MAX_SCOPES_LEN: u64 = 64 << 20;

/// A snapshot's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The stream id noted before the scan; tail from here.
    pub at: EventId,
    /// The filter's size in bits (`64 * words`).
    pub bits: u64,
    /// The filter's hash count.
    pub hashes: u32,
    /// The item count the filter was sized for.
    pub capacity: u64,
    /// Token rules the scan found.
    pub token_rules: u64,
    /// Words of bit array.
    pub words: u64,
    /// Bytes of scope-rule JSON.
    pub scopes_len: u64,
    /// blake3 of the body, first 16 bytes.
    pub checksum: [u8; 16],
}

/// A decoded snapshot, borrowing the value's bytes.
pub struct Snapshot<'a> {
    /// Its header.
    pub header: Header,
    /// The bloom filter's words, little-endian (8 bytes each).
    pub words_le: &'a [u8],
    /// The live scope rules at the scan.
    pub scopes: Vec<ScopeRule>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl Header {
    /// Parses (and sanity-checks) the first [`HEADER_LEN`] bytes of `b`.
    pub fn parse(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_LEN || &b[..6] != MAGIC || b[6..8] != VERSION.to_le_bytes() {
            return None;
        }
        let mut hashes = [0u8; 4];
        hashes.copy_from_slice(&b[32..36]);
        let mut checksum = [0u8; 16];
        checksum.copy_from_slice(&b[68..84]);
        let h = Header {
            at: EventId {
                ms: u64_at(b, 8),
                seq: u64_at(b, 16),
            },
            bits: u64_at(b, 24),
            hashes: u32::from_le_bytes(hashes),
            capacity: u64_at(b, 36),
            token_rules: u64_at(b, 44),
            words: u64_at(b, 52),
            scopes_len: u64_at(b, 60),
            checksum,
        };
        let sane = h.words > 0
            && h.words <= MAX_WORDS
            && h.bits == h.words * 64
            && (1..=30).contains(&h.hashes)
            && h.scopes_len <= MAX_SCOPES_LEN;
        sane.then_some(h)
    }

    fn body_len(&self) -> usize {
        (self.words * 8 + self.scopes_len) as usize
    }

    /// Bytes of the whole value this header describes.
    pub fn total_len(&self) -> u64 {
        HEADER_LEN as u64 + self.words * 8 + self.scopes_len
    }
}

/// Encodes a snapshot of `bloom` and `scopes`, taken from a scan that began
/// after the stream's last id was `at`.
pub fn encode(at: EventId, bloom: &AtomicBloom, token_rules: u64, scopes: &[ScopeRule]) -> Vec<u8> {
    // Serializing rules (strings and integers) cannot fail; an empty list
    // instead would only lose scope rules, so it is not silently done.
    let json = serde_json::to_vec(scopes).unwrap_or_else(|_| b"null".to_vec());
    let words = bloom.memory_bytes() / 8;
    let mut out = Vec::with_capacity(HEADER_LEN + words * 8 + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&at.ms.to_le_bytes());
    out.extend_from_slice(&at.seq.to_le_bytes());
    out.extend_from_slice(&bloom.bits().to_le_bytes());
    out.extend_from_slice(&bloom.hashes().to_le_bytes());
    out.extend_from_slice(&(bloom.capacity() as u64).to_le_bytes());
    out.extend_from_slice(&token_rules.to_le_bytes());
    out.extend_from_slice(&(words as u64).to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&[0u8; 16]);
    debug_assert_eq!(out.len(), HEADER_LEN);
    // Straight from the filter: no second copy of a filter that may be tens of MB.
    bloom.write_words_le(&mut out);
    out.extend_from_slice(&json);
    let sum = blake3::hash(&out[HEADER_LEN..]);
    out[68..84].copy_from_slice(&sum.as_bytes()[..16]);
    out
}

/// Decodes a whole snapshot value; `None` when it fails any check.
pub fn decode(b: &[u8]) -> Option<Snapshot<'_>> {
    let header = Header::parse(b)?;
    if b.len() != HEADER_LEN + header.body_len() {
        return None;
    }
    let body = &b[HEADER_LEN..];
    if blake3::hash(body).as_bytes()[..16] != header.checksum {
        return None;
    }
    let (words_le, json) = body.split_at((header.words * 8) as usize);
    let scopes: Vec<ScopeRule> = serde_json::from_slice(json).ok()?;
    Some(Snapshot {
        header,
        words_le,
        scopes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::FingerprintKey;
    use crate::store::ScopeKey;

    #[test]
    fn a_snapshot_round_trips_and_any_damage_is_refused() {
        let b = AtomicBloom::new(1000, 0.01);
        let key = FingerprintKey::from_bytes([3; 32]);
        for i in 0..500u32 {
            b.insert(&key.fingerprint(&i.to_le_bytes()));
        }
        let rule = ScopeRule {
            key: ScopeKey {
                sub: "u".into(),
                org: None,
                provider: Some("p".into()),
            },
            revoked_at: 10,
            expires_at: 20,
        };
        let at = EventId { ms: 17, seq: 3 };
        let v = encode(at, &b, 500, std::slice::from_ref(&rule));
        let s = decode(&v).unwrap();
        assert_eq!(s.header.at, at);
        assert_eq!((s.header.bits, s.header.hashes), (b.bits(), b.hashes()));
        assert_eq!(s.header.token_rules, 500);
        assert_eq!(s.header.capacity, 1000);
        let mut le = Vec::new();
        b.write_words_le(&mut le);
        assert_eq!(s.words_le, &le[..]);
        assert_eq!(s.scopes, vec![rule]);
        assert_eq!(s.header.total_len(), v.len() as u64);
        assert_eq!(Header::parse(&v[..HEADER_LEN]), Some(s.header));

        let mut flipped = v.clone();
        flipped[HEADER_LEN + 3] ^= 1;
        assert!(decode(&flipped).is_none(), "checksum");
        assert!(decode(&v[..v.len() - 1]).is_none(), "truncated");
        let mut version = v.clone();
        version[6] = 9;
        assert!(decode(&version).is_none(), "version");
        assert!(decode(b"garbage").is_none());
        assert!(Header::parse(&[]).is_none());
    }
}
