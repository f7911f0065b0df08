//! Command-line flags (each also read from `REVGATE_<NAME>`) and the two
//! secret-carrying environment variables, applied over the loaded file.
//!
//! Flags win over the file; `REVGATE_FINGERPRINT_KEY` and
//! `REVGATE_ADMIN_TOKEN` fill their keys only when the file leaves them
//! unset, so a secret can come from a Kubernetes Secret rather than the file.

use std::path::PathBuf;

use super::{AccessLogFormat, Config, ConfigError, Consistency, LogFormat};
use crate::dialect::RevokeMode;

/// The command-line flags that override the file (the fixed contract).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// Configuration file (TOML).
    #[arg(long, env = "REVGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8080.
    #[arg(long, env = "REVGATE_LISTEN")]
    pub listen: Option<String>,
    /// Default upstream URL.
    #[arg(long, env = "REVGATE_UPSTREAM")]
    pub upstream: Option<String>,
    /// Admin listen address.
    #[arg(long, env = "REVGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// `memory` or a Redis URL.
    #[arg(long, env = "REVGATE_STORE")]
    pub store: Option<String>,
    /// Journal path.
    #[arg(long, env = "REVGATE_JOURNAL")]
    pub journal: Option<PathBuf>,
    /// Mode of every revoke endpoint.
    #[arg(long, env = "REVGATE_REVOKE_MODE", value_parser = parse_mode)]
    pub revoke_mode: Option<RevokeMode>,
    /// Log format.
    #[arg(long, env = "REVGATE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Access-log format: text, json or combined (`log.access_log_format`).
    #[arg(long, env = "REVGATE_ACCESS_LOG_FORMAT")]
    pub access_log_format: Option<AccessLogFormat>,
    /// Access-log file, appended to (`log.access_log_path`; default stderr).
    #[arg(long, env = "REVGATE_ACCESS_LOG_PATH")]
    pub access_log_path: Option<PathBuf>,
    /// `eventual` or `confirmed` (`store.consistency`).
    #[arg(long, env = "REVGATE_CONSISTENCY", value_parser = parse_consistency)]
    pub consistency: Option<Consistency>,
}

fn parse_consistency(s: &str) -> Result<Consistency, String> {
    match s {
        "eventual" => Ok(Consistency::Eventual),
        "confirmed" => Ok(Consistency::Confirmed),
        other => Err(format!("expected eventual or confirmed, got {other:?}")),
    }
}

fn parse_mode(s: &str) -> Result<RevokeMode, String> {
    match s {
        "forward" => Ok(RevokeMode::Forward),
        "terminate" => Ok(RevokeMode::Terminate),
        other => Err(format!("expected forward or terminate, got {other:?}")),
    }
}

impl Overrides {
    /// Loads the file named by `--config` (or defaults), then applies the flags.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
                })?;
                Config::from_toml(&text)?
            }
            None => Config::default(),
        };
        self.apply(&mut config);
        Ok(config)
    }

    /// Applies the flags over a loaded file.
    pub fn apply(&self, c: &mut Config) {
        if let Some(v) = &self.listen {
            c.server.listen = v.clone();
        }
        if let Some(v) = &self.upstream {
            c.upstream.url = Some(v.clone());
        }
        if let Some(v) = &self.admin_listen {
            c.admin.listen = v.clone();
        }
        if let Some(v) = &self.store {
            c.store.url = v.clone();
        }
        if let Some(v) = &self.journal {
            c.store.journal = v.clone();
        }
        if let Some(v) = self.revoke_mode {
            c.revoke.mode = v;
            for d in [
                &mut c.revoke.nylas,
                &mut c.revoke.onelogin,
                &mut c.revoke.langsmith,
                &mut c.revoke.codegen,
                &mut c.revoke.rfc7009,
            ] {
                d.mode = None;
            }
        }
        if let Some(v) = self.log_format {
            c.log.format = v;
        }
        if let Some(v) = self.access_log_format {
            c.log.access_log_format = Some(v);
        }
        if let Some(v) = &self.access_log_path {
            c.log.access_log_path = Some(v.clone());
        }
        if let Some(v) = self.consistency {
            c.store.consistency = v;
        }
        if c.tokens.fingerprint_key.is_none() {
            if let Ok(k) = std::env::var("REVGATE_FINGERPRINT_KEY") {
                c.tokens.fingerprint_key = Some(k);
            }
        }
        if c.admin.token.is_none() {
            if let Ok(t) = std::env::var("REVGATE_ADMIN_TOKEN") {
                c.admin.token = Some(t);
            }
        }
    }
}
