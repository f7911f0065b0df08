//! Configuration: a TOML file, then command-line flags (each also read from
//! `REVGATE_<NAME>`), then validation whose errors name the offending key.
//!
//! Pipeline: [`Config::from_toml`] (serde, unknown keys refused) →
//! [`Overrides::apply`] → [`Config::validate`] → [`Settings`], the checked,
//! parsed form the rest of the gateway uses. Every key is documented in
//! `config/revgate.example.toml`; durations are humantime strings ("30s",
//! "24h"), each bounded in validation.
//!
//! ```text
//! file.rs        the file's shape: one serde type per section, defaults
//! overrides.rs   flags and environment over the file
//! validate.rs    one check per section; duration caps; builds Settings
//! verify.rs      [tokens.verify]: the JWKS source, issuers, audiences
//! feeds.rs       [feeds]: each identity-provider feed's source, path, poll
//! settings.rs    Settings and its typed accessors
//! report.rs      every error at once, with its file; the journal-dir and
//!                access-log-file checks
//! ```

mod feeds;
mod file;
mod overrides;
mod report;
mod settings;
mod validate;
mod verify;

#[cfg(test)]
mod tests;

pub use file::*;
pub use overrides::Overrides;
pub use report::{access_log_writable, journal_writable, ConfigReport};
pub use settings::{DialectSetting, Lifetimes, Route, ServerSettings, Settings, UpstreamUrl};
pub use validate::parse_upstream;

/// A configuration error: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `routes[1].upstream`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}
