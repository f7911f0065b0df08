//! The journal's on-disk record format: a file header with a version byte,
//! then framed, checksummed binary records, each with a kind byte; and the
//! decoder of the previous, JSON format (version 1), kept for the upgrade.
//!
//! ```text
//! file     = header record*
//! header   = "RVGJ" version:u8 0x00 0x00 0x00          (8 bytes; version 2)
//! record   = len:u32le crc:u32le payload               crc = CRC-32 (IEEE) of payload
//! payload  = kind:u8 body                              len = 1 + body length
//! kind 1   Token        fingerprint:[u8;16] expires_at:u64le
//! kind 2   Scope        revoked_at:u64le expires_at:u64le key
//! kind 3   RemoveToken  fingerprint:[u8;16]
//! kind 4   RemoveScope  key
//! kind 5   Bind         fingerprint:[u8;16] issued_at:u64le expires_at:u64le key
//! kind 6   RemoveBinding fingerprint:[u8;16]
//! kind 7   Join         fingerprint:[u8;16] family:[u8;16] generation:u32le flags:u8
//!                       expires_at:u64le superseded_at:u64le     flags&1 = refresh token
//! kind 8   Family       family:[u8;16] generation:u32le revoked_at:u64le expires_at:u64le
//!                       generation u32::MAX = every generation (the grant)
//! kind 9   FamilyOf     fingerprint:[u8;16] token_expires_at:u64le reach:u8
//!                       revoked_at:u64le expires_at:u64le        reach 0 by role, 1 token, 2 pair, 3 grant
//! key      = flags:u8 sub:str [org:str if flags&1] [provider:str if flags&2]
//! str      = len:u32le utf8-bytes
//! ```
//!
//! A token rule is 33 bytes on disk (the JSON record was ~97) and decodes
//! without parsing text. Version 1 files have no header: they start with a
//! record's length, and no valid version-1 record can begin with `RVGJ`
//! (that length would be over 1 GiB), so the two are told apart by the first
//! four bytes.
//!
//! A new [`RevocationCommand`] variant gets the next kind byte: the encoder
//! matches every variant, so adding one does not compile until it has a
//! kind. A record whose CRC is good but whose kind this build does not know
//! was written by a newer revgate: it is an error ([`RecordError::UnknownKind`]),
//! never a torn tail to cut, so a downgrade refuses to start instead of
//! dropping revocations.

use crate::credentials::Fingerprint;
use crate::store::family::{FamilyOf, Reach};
use crate::store::{
    Binding, FamilyRule, Member, RevocationCommand, RevocationTarget, ScopeKey, ScopeRule,
    TokenRule,
};

/// The first four bytes of a versioned journal.
pub const MAGIC: [u8; 4] = *b"RVGJ";
/// The record format this build writes.
pub const VERSION: u8 = 2;
/// The header every file this build writes starts with.
pub const HEADER: [u8; 8] = [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], VERSION, 0, 0, 0];
/// Bytes of framing before a record's payload (length and CRC).
pub const FRAME: usize = 8;

const KIND_TOKEN: u8 = 1;
const KIND_SCOPE: u8 = 2;
const KIND_REMOVE_TOKEN: u8 = 3;
const KIND_REMOVE_SCOPE: u8 = 4;
const KIND_BIND: u8 = 5;
const KIND_REMOVE_BINDING: u8 = 6;
const KIND_JOIN: u8 = 7;
const KIND_FAMILY: u8 = 8;
const KIND_FAMILY_OF: u8 = 9;

/// A family rule's generation on disk when it covers every generation.
const EVERY_GENERATION: u32 = u32::MAX;

const HAS_ORG: u8 = 1;
const HAS_PROVIDER: u8 = 2;

/// Why a payload whose checksum was good could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A kind byte this build does not know: written by a newer revgate.
    #[error("record kind {0} is unknown to this build (written by a newer revgate?)")]
    UnknownKind(u8),
    /// The body does not match its kind's layout.
    #[error("malformed record body")]
    Malformed,
    /// The payload is empty.
    #[error("empty record")]
    Empty,
}

/// Appends one framed record for `cmd` to `buf`.
pub fn encode_into(buf: &mut Vec<u8>, cmd: &RevocationCommand) {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME]);
    match cmd {
        RevocationCommand::Token(t) => {
            buf.push(KIND_TOKEN);
            buf.extend_from_slice(t.fingerprint.as_bytes());
            buf.extend_from_slice(&t.expires_at.to_le_bytes());
        }
        RevocationCommand::Scope(s) => {
            buf.push(KIND_SCOPE);
            buf.extend_from_slice(&s.revoked_at.to_le_bytes());
            buf.extend_from_slice(&s.expires_at.to_le_bytes());
            put_key(buf, &s.key);
        }
        RevocationCommand::Remove(RevocationTarget::Token(fp)) => {
            buf.push(KIND_REMOVE_TOKEN);
            buf.extend_from_slice(fp.as_bytes());
        }
        RevocationCommand::Remove(RevocationTarget::Scope(key)) => {
            buf.push(KIND_REMOVE_SCOPE);
            put_key(buf, key);
        }
        RevocationCommand::Bind(b) => {
            buf.push(KIND_BIND);
            buf.extend_from_slice(b.fingerprint.as_bytes());
            buf.extend_from_slice(&b.issued_at.to_le_bytes());
            buf.extend_from_slice(&b.expires_at.to_le_bytes());
            put_key(buf, &b.who);
        }
        RevocationCommand::Remove(RevocationTarget::Binding(fp)) => {
            buf.push(KIND_REMOVE_BINDING);
            buf.extend_from_slice(fp.as_bytes());
        }
        RevocationCommand::Join(m) => {
            buf.push(KIND_JOIN);
            buf.extend_from_slice(m.fingerprint.as_bytes());
            buf.extend_from_slice(m.family.as_bytes());
            buf.extend_from_slice(&m.generation.to_le_bytes());
            buf.push(u8::from(m.refresh));
            buf.extend_from_slice(&m.expires_at.to_le_bytes());
            buf.extend_from_slice(&m.superseded_at.to_le_bytes());
        }
        RevocationCommand::FamilyOf(f) => {
            buf.push(KIND_FAMILY_OF);
            buf.extend_from_slice(f.token.fingerprint.as_bytes());
            buf.extend_from_slice(&f.token.expires_at.to_le_bytes());
            buf.push(match f.reach {
                None => 0,
                Some(Reach::Token) => 1,
                Some(Reach::Pair) => 2,
                Some(Reach::Grant) => 3,
            });
            buf.extend_from_slice(&f.revoked_at.to_le_bytes());
            buf.extend_from_slice(&f.expires_at.to_le_bytes());
        }
        // The members it expanded into are not written: replay expands again.
        RevocationCommand::Family(f) => {
            buf.push(KIND_FAMILY);
            buf.extend_from_slice(f.family.as_bytes());
            let g = f.generation.unwrap_or(EVERY_GENERATION);
            buf.extend_from_slice(&g.to_le_bytes());
            buf.extend_from_slice(&f.revoked_at.to_le_bytes());
            buf.extend_from_slice(&f.expires_at.to_le_bytes());
        }
    }
    let payload_len = buf.len() - start - FRAME;
    let crc = crc32fast::hash(&buf[start + FRAME..]);
    buf[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    buf[start + 4..start + FRAME].copy_from_slice(&crc.to_le_bytes());
}

fn put_key(buf: &mut Vec<u8>, key: &ScopeKey) {
    let flags = if key.org.is_some() { HAS_ORG } else { 0 }
        | if key.provider.is_some() {
            HAS_PROVIDER
        } else {
            0
        };
    buf.push(flags);
    put_str(buf, &key.sub);
    if let Some(org) = &key.org {
        put_str(buf, org);
    }
    if let Some(p) = &key.provider {
        put_str(buf, p);
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Decodes one version-2 payload (kind byte and body, checksum already
/// verified).
pub fn decode_payload(payload: &[u8]) -> Result<RevocationCommand, RecordError> {
    let (&kind, body) = payload.split_first().ok_or(RecordError::Empty)?;
    let mut r = Reader(body);
    let cmd = match kind {
        KIND_TOKEN => RevocationCommand::Token(TokenRule {
            fingerprint: r.fingerprint()?,
            expires_at: r.u64()?,
        }),
        KIND_SCOPE => {
            let revoked_at = r.u64()?;
            let expires_at = r.u64()?;
            RevocationCommand::Scope(ScopeRule {
                key: r.key()?,
                revoked_at,
                expires_at,
            })
        }
        KIND_REMOVE_TOKEN => RevocationCommand::Remove(RevocationTarget::Token(r.fingerprint()?)),
        KIND_REMOVE_SCOPE => RevocationCommand::Remove(RevocationTarget::Scope(r.key()?)),
        KIND_BIND => RevocationCommand::Bind(Binding {
            fingerprint: r.fingerprint()?,
            issued_at: r.u64()?,
            expires_at: r.u64()?,
            who: r.key()?,
        }),
        KIND_REMOVE_BINDING => {
            RevocationCommand::Remove(RevocationTarget::Binding(r.fingerprint()?))
        }
        KIND_JOIN => RevocationCommand::Join(Member {
            fingerprint: r.fingerprint()?,
            family: r.fingerprint()?,
            generation: r.u32()?,
            refresh: match r.take(1)?[0] {
                0 => false,
                1 => true,
                _ => return Err(RecordError::Malformed),
            },
            expires_at: r.u64()?,
            superseded_at: r.u64()?,
        }),
        KIND_FAMILY => RevocationCommand::Family(FamilyRule {
            family: r.fingerprint()?,
            generation: Some(r.u32()?).filter(|&g| g != EVERY_GENERATION),
            revoked_at: r.u64()?,
            expires_at: r.u64()?,
            members: Vec::new(),
        }),
        KIND_FAMILY_OF => RevocationCommand::FamilyOf(FamilyOf {
            token: TokenRule {
                fingerprint: r.fingerprint()?,
                expires_at: r.u64()?,
            },
            reach: match r.take(1)?[0] {
                0 => None,
                1 => Some(Reach::Token),
                2 => Some(Reach::Pair),
                3 => Some(Reach::Grant),
                _ => return Err(RecordError::Malformed),
            },
            revoked_at: r.u64()?,
            expires_at: r.u64()?,
        }),
        other => return Err(RecordError::UnknownKind(other)),
    };
    if !r.0.is_empty() {
        return Err(RecordError::Malformed);
    }
    Ok(cmd)
}

/// Decodes one version-1 (JSON) payload.
pub fn decode_v1_payload(payload: &[u8]) -> Option<RevocationCommand> {
    serde_json::from_slice(payload).ok()
}

/// A cursor over a record body.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn fingerprint(&mut self) -> Result<Fingerprint, RecordError> {
        let b = self.take(16)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(Fingerprint::from_bytes(a))
    }

    fn str(&mut self) -> Result<String, RecordError> {
        let b = self.take(4)?;
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let s = self.take(len)?;
        std::str::from_utf8(s)
            .map(str::to_owned)
            .map_err(|_| RecordError::Malformed)
    }

    fn key(&mut self) -> Result<ScopeKey, RecordError> {
        let flags = self.take(1)?[0];
        if flags & !(HAS_ORG | HAS_PROVIDER) != 0 {
            return Err(RecordError::Malformed);
        }
        let sub = self.str()?;
        let org = if flags & HAS_ORG != 0 {
            Some(self.str()?)
        } else {
            None
        };
        let provider = if flags & HAS_PROVIDER != 0 {
            Some(self.str()?)
        } else {
            None
        };
        Ok(ScopeKey { sub, org, provider })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<RevocationCommand> {
        let key = |org: Option<&str>, provider: Option<&str>| ScopeKey {
            sub: "user-é".into(),
            org: org.map(Into::into),
            provider: provider.map(Into::into),
        };
        vec![
            RevocationCommand::Token(TokenRule {
                fingerprint: Fingerprint::from_bytes([3; 16]),
                expires_at: u64::MAX,
            }),
            RevocationCommand::Scope(ScopeRule {
                key: key(Some("o"), Some("p")),
                revoked_at: 17,
                expires_at: 99,
            }),
            RevocationCommand::Scope(ScopeRule {
                key: key(None, Some("")),
                revoked_at: 0,
                expires_at: 1,
            }),
            RevocationCommand::Remove(RevocationTarget::Token(Fingerprint::from_bytes([0; 16]))),
            RevocationCommand::Remove(RevocationTarget::Scope(key(Some("o"), None))),
            RevocationCommand::Bind(Binding {
                fingerprint: Fingerprint::from_bytes([9; 16]),
                who: key(Some("42"), None),
                issued_at: 1_700_000_000,
                expires_at: u64::MAX,
            }),
            RevocationCommand::Remove(RevocationTarget::Binding(Fingerprint::from_bytes([8; 16]))),
            RevocationCommand::Join(Member {
                fingerprint: Fingerprint::from_bytes([7; 16]),
                family: Fingerprint::from_bytes([6; 16]),
                generation: 3,
                refresh: true,
                expires_at: 1_800_000_000,
                superseded_at: 1_700_000_001,
            }),
            RevocationCommand::Family(FamilyRule {
                family: Fingerprint::from_bytes([6; 16]),
                generation: Some(2),
                revoked_at: 5,
                expires_at: 6,
                members: Vec::new(),
            }),
            RevocationCommand::FamilyOf(FamilyOf {
                token: TokenRule {
                    fingerprint: Fingerprint::from_bytes([4; 16]),
                    expires_at: 77,
                },
                reach: Some(Reach::Pair),
                revoked_at: 7,
                expires_at: 78,
            }),
            RevocationCommand::FamilyOf(FamilyOf {
                token: TokenRule {
                    fingerprint: Fingerprint::from_bytes([3; 16]),
                    expires_at: 1,
                },
                reach: None,
                revoked_at: 0,
                expires_at: u64::MAX,
            }),
            RevocationCommand::Family(FamilyRule {
                family: Fingerprint::from_bytes([5; 16]),
                generation: None,
                revoked_at: 5,
                expires_at: u64::MAX,
                members: Vec::new(),
            }),
        ]
    }

    #[test]
    fn every_kind_round_trips_and_a_token_rule_is_33_bytes() {
        for cmd in all_kinds() {
            let mut buf = Vec::new();
            encode_into(&mut buf, &cmd);
            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            assert_eq!(len, buf.len() - FRAME);
            let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
            assert_eq!(crc, crc32fast::hash(&buf[FRAME..]));
            assert_eq!(decode_payload(&buf[FRAME..]), Ok(cmd.clone()));
        }
        let mut buf = Vec::new();
        encode_into(&mut buf, &all_kinds()[0]);
        assert_eq!(buf.len(), 33);
    }

    #[test]
    fn bad_payloads_are_named_errors() {
        assert_eq!(decode_payload(&[]), Err(RecordError::Empty));
        assert_eq!(
            decode_payload(&[200, 1, 2]),
            Err(RecordError::UnknownKind(200))
        );
        // Truncated, too long, bad flags, bad UTF-8.
        let mut buf = Vec::new();
        encode_into(&mut buf, &all_kinds()[1]);
        let payload = &buf[FRAME..];
        for cut in 1..payload.len() {
            assert_eq!(
                decode_payload(&payload[..cut]),
                Err(RecordError::Malformed),
                "cut at {cut}"
            );
        }
        let mut long = payload.to_vec();
        long.push(0);
        assert_eq!(decode_payload(&long), Err(RecordError::Malformed));
        let mut flags = payload.to_vec();
        flags[17] |= 0x80;
        assert_eq!(decode_payload(&flags), Err(RecordError::Malformed));
        let mut utf8 = payload.to_vec();
        utf8[22] = 0xff;
        assert_eq!(decode_payload(&utf8), Err(RecordError::Malformed));
    }

    #[test]
    fn a_version_1_file_cannot_start_with_the_magic() {
        let as_len = u32::from_le_bytes(MAGIC) as usize;
        assert!(as_len > super::super::MAX_RECORD);
    }
}
