//! Credentials: where a request's token comes from, the identity and keyed
//! fingerprint that stand for it everywhere else, and the attributes
//! (subject, org, provider, issue and expiry times, `jti`, `iss`) peeked from
//! a JWT or from trusted identity headers.
//!
//! Sources ([`extract`]): the union of what common servers accept, so that
//! no upstream reads a token revgate did not judge — `Authorization` under
//! any scheme (strictly `Bearer 1*(SP/HTAB) token` when it says bearer), the
//! `access_token` parameter of the query (configurable) and of a
//! form-encoded body, under every spelling PHP, ASP.NET, Rack and Python
//! accept, and configured API-key headers under every CGI spelling. More
//! than one RFC 6750 method, the same one twice, or a spelling parsers read
//! differently is malformed (§3.1) and answered 400 `invalid_request` by the
//! verdict stage. `docs/security.md` has the whole grammar.
//!
//! Identity ([`token_identity`]): a JWS compact token is named by its
//! signing input, so every spelling of its signature and every other valid
//! signature over the same content is the same token; anything else by its
//! bytes. The raw token never leaves this module except as a
//! [`Fingerprint`]: a 128-bit keyed hash under a secret shared by all
//! instances (BLAKE3 for an opaque token, SipHash-2-4 for a signing input;
//! [`FingerprintKey::token_fingerprint`] says why), on every request's path
//! and so chosen for speed among keyed PRFs (HMAC-SHA256 costs several
//! times more).
//!
//! The JWT peek is deliberately unverified: a forged claim can only make its
//! bearer *rejected* (a scope rule matches it), never accepted. It never
//! identifies a revoker (see `docs/security.md`).
//!
//! Files: [`grammar`] (where a token is looked for; [`params`] the
//! `access_token` parameter), [`identity`] (what names
//! it), [`fingerprint`] (the keyed hash that stands for it), [`attributes`]
//! (what it says of its bearer).

pub mod attributes;
pub mod fingerprint;
pub mod grammar;
pub mod identity;
pub mod params;

pub use attributes::*;
pub use fingerprint::*;
pub use grammar::*;
pub use identity::*;
pub use params::*;

#[cfg(test)]
pub(crate) mod testutil {
    use http::{HeaderMap, HeaderValue};

    pub fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }
}
