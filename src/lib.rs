//! # revgate
//!
//! A reverse-proxy gateway that makes OAuth / bearer-token revocation real.
//!
//! # Layout
//!
//! ```text
//! config.rs        TOML + flags + env -> checked Settings
//! server.rs        listeners, TLS, accept loop, graceful shutdown
//! proxy.rs         the request's path, stage by stage; routing + forwarding
//! credentials.rs   token extraction, fingerprint, claim peek
//! verdict.rs       the per-request revocation check and the 401 it answers
//! dialect/         the vendors' revoke endpoints (pure parse/render pairs)
//! store/           RevocationStore trait, MemoryStore, RedisStore, LocalCache, journal
//! admin.rs         /healthz /readyz /metrics and the admin revocation API
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod credentials;
pub mod dialect;
pub mod metrics;
pub mod store;
pub mod telemetry;
pub mod tls;
