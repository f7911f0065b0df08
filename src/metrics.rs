//! Metrics (placeholder until the production work lands).

use crate::proxy::Outcome;

/// Counts a request by route and outcome.
pub fn request(_route: &str, _outcome: Outcome) {}
/// Gateway overhead, seconds.
pub fn overhead(_seconds: f64) {}
/// Upstream time, seconds.
pub fn upstream_time(_route: &str, _seconds: f64) {}
/// A revocation applied.
pub fn revocation_applied(_source: &str, _mode: &str) {}
/// A revocation that failed to apply.
pub fn revocation_apply_failed(_source: &str) {}
/// A forwarded scope revoke whose user was unknown.
pub fn unidentified_revoke(_dialect: &str) {}
/// Sets the store's gauges (called before rendering).
pub fn store_gauges(_store: &dyn crate::store::RevocationStore) {}
/// The Prometheus text.
pub fn render() -> String {
    String::new()
}
