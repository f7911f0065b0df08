//! Principals: who is making a call, from sources revgate can vouch for.
//!
//! Today this is the identity of a *revoker*. A LangSmith or Codegen revoke
//! in terminate mode revokes every token of "the current user", so the
//! current user must come from a verified source, never from claims anyone
//! can write into an unsigned token (`{"alg":"none"}.{"sub":"victim"}.x`):
//!
//! 1. a JWT in the call's own credential that the [`Verifier`] accepted:
//!    signature against the configured JWKS (`[tokens.verify]`), `iss`,
//!    `aud`, `exp`, `nbf`/`iat` within `leeway` (the rules are in
//!    [`verify`], the key set's life in [`jwks`]);
//! 2. else the trusted identity headers (`[tokens.identity_headers]`), which
//!    an authenticating layer in front of revgate sets.
//!
//! Between the two, when `[identity.introspection]` is configured, the
//! authorization server's RFC 7662 answer for the caller's own credential
//! ([`introspection`]): an active credential's `sub`.
//!
//! Without any, the call gets the dialect's 401 and nothing is revoked.
//!
//! A scope rule names a subject, not an issuer (tokens are judged on their
//! peeked `sub` alone): list several `issuers` only when their subject
//! namespaces do not overlap, or a user of one could revoke the tokens of the
//! same `sub` at another.
//! With no `[tokens.verify]` section only identity headers can identify a
//! terminate-mode revoker.
//!
//! In forward mode the upstream authenticates the caller: revgate applies the
//! revocation only on the upstream's 2xx, so the peeked (unverified) claims
//! may name the user there; an upstream that accepted a forged token has
//! already been fooled independently of revgate.
//!
//! *Judging* a request keeps using peeked claims (`credentials::peek_jwt`):
//! a forged claim there can only get its own bearer rejected. A credential
//! that names no subject that way is introspected when scope rules exist
//! and `[identity.introspection]` is set ([`introspection`]).

mod claims;
pub mod introspection;
pub mod jwks;
mod keys;
#[cfg(test)]
mod test_keys;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use introspection::{Answer, IntrospectionSettings, Introspector};
pub use jwks::Verifier;
pub use verify::{KeySet, KeySetError, Policy, VerifiedClaims, VerifyError};

/// The largest JWKS document fetched (a provider's set is a few KiB).
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// Where the signature keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// Fetched from this `https://` (or loopback `http://`) URL.
    Url(http::Uri),
    /// Read from this file when the configuration was checked.
    File {
        /// The file.
        path: PathBuf,
        /// Its keys.
        keys: Arc<KeySet>,
    },
}

/// Checked `[tokens.verify]` settings.
#[derive(Clone, Debug)]
pub struct VerifySettings {
    /// The keys.
    pub source: KeySource,
    /// What tokens must say.
    pub policy: Policy,
    /// How often a URL's key set is refetched.
    pub refresh_interval: Duration,
    /// The least time between two fetches of the URL.
    pub min_refresh_interval: Duration,
    /// The bound on one fetch.
    pub fetch_timeout: Duration,
}
