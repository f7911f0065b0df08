//! Bulk import and export of revocations (issue 18): `POST
//! /admin/v1/revocations/import` and `GET /admin/v1/revocations/export`.
//!
//! # Import
//!
//! The body is NDJSON, read incrementally: one revocation per line, never
//! the whole body in memory (a line is at most [`MAX_LINE`] bytes; a longer
//! one is rejected and skipped without being buffered). A line is:
//!
//! - a raw token (anything not starting with `{`), revoked as `POST
//!   /admin/v1/revocations` `{"token":..}` would: fingerprinted here, kept
//!   until its JWT `exp` or `tokens.max_lifetime`;
//! - an admin API shape: `{"token":".."}`, `{"scope":{"sub":..,"org":..,
//!   "provider":..}}` (revoked as of now), `{"jti":"..","iss":".."}`, or a
//!   principal, `{"credential":"..","sub":"..","org":"..","provider":"..",
//!   "issued_at":N,"expires_at":N}` (`POST /admin/v1/principals`'s body,
//!   its bounds and defaults; its `family`/`token_type` are not taken on
//!   this line: a membership is a `join` line, below);
//! - what the export writes (a store command, by `kind`):
//!   `{"kind":"token","fingerprint":"<32 hex>","expires_at":N}`,
//!   `{"kind":"scope","sub":..,"org":..,"provider":..,"revoked_at":N,
//!   "expires_at":N}`, `{"kind":"bind","fingerprint":..,"sub":..,
//!   "issued_at":N,"expires_at":N}`, a token family's rule
//!   `{"kind":"family","family":"<32 hex>","generation":N,"revoked_at":N,
//!   "expires_at":N}` (no `generation`: the whole grant; `revoked_at`
//!   defaults to now) and a family membership `{"kind":"join",
//!   "fingerprint":..,"family":..,"generation":N,"refresh":bool,
//!   "expires_at":N,"superseded_at":N}` (`refresh` defaults to false,
//!   `superseded_at` to 0): the store's own commands, as the stream
//!   events and the principals API's view name families (by id, the
//!   fingerprint-sized hex of `crate::store::family`) (a `source` field is
//!   ignored).
//!
//! Blank lines are skipped (but counted in line numbers). Lines are applied
//! in batches of [`BATCH`] with [`RevocationStore::apply_batch`]: durable
//! once per batch (one journal fsync embedded; one pipeline and one stream
//! event on Redis; one confirmation in confirmed consistency), and
//! the next batch is parsed while the previous one is being written. A
//! line that fails is reported (its 1-based line number and why), never
//! fatal. The answer, once the body has ended and every batch is durable:
//!
//! ```text
//! 200 {"lines":N,"accepted":A,"changed":C,"expired":E,"rejected":R,
//!      "errors":[{"line":n,"error":".."}],"errors_truncated":bool}
//! ```
//!
//! `accepted` counts lines recorded durably (`changed` of them were new);
//! `expired` lines named a rule whose expiry had passed (nothing to
//! record). At most [`MAX_ERRORS`] errors are listed. If the store fails,
//! the answer is 503 with the same counts for the batches acknowledged
//! before it (a retry of the whole import is safe: every rule merges).
//! Errors never quote a line's content: a line may be a token.
//!
//! # Export
//!
//! Streamed NDJSON of every live rule, in the import's `kind` form: token
//! rules (revocations by `jti` are token rules under their own fingerprint,
//! so they are among them) with their `source`, scope rules, bindings,
//! then token families: their rules and their memberships (on Redis,
//! those written to Redis; one still in the outbox is exported once
//! written).
//!
//! Families: a family *rule* is a rule (it also revokes a token that joins
//! the family later). A *membership* is not a revocation, but it is
//! exported too: someone migrating expects a grant revoked before the move
//! to stay closed to the tokens a refresh yields after it, and a grant
//! revoked after the move (RFC 7009's refresh token, Nylas, a reused
//! refresh token) to reach the tokens issued before it; both need the
//! memberships on the new side, and the family ids are keyed with
//! `tokens.fingerprint_key` as everything else here. The members a family
//! rule already revoked are token rules as well (exported as such), so an
//! import that takes the token lines only still enforces them. A rule's
//! `revoked_at` is not kept by the stores: the export's is its own time. Never a raw token: the gateway has none. Another deployment that
//! shares `tokens.fingerprint_key` enforces the same rules after importing
//! it. Every kind is read from the store a chunk at a time (never a copy
//! of all its bindings or memberships: `benches/export_memory.sh`), and
//! written through a small bounded channel, so a slow reader holds the
//! export back instead of growing memory; a store error mid-way aborts the
//! body (the client sees a broken transfer, not a short, clean file). A
//! walk of a live store holds every rule that exists throughout it at
//! least once: from Redis (`SCAN`) a line may come twice, which an import
//! applies as once.

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use serde::Deserialize;

use super::error;
use crate::dialect::{RevokeIntent, RevokeMode};
use crate::proxy::{Body, Caller, Gateway, Runtime, ScopeAdmission};
use crate::store::{
    now_unix, Applied, Binding, FamilyRule, Member, RevocationCommand, RevocationStore, ScopeKey,
    ScopeRule, StoreError, TokenRule,
};
use crate::verdict::json_response;

/// Lines per store batch.
pub const BATCH: usize = 10_000;

/// Most revocations an import leaves waiting for the shared store: while
/// Redis is away every batch goes to the outbox, which is journaled but
/// also held in memory until replayed, so past this many acknowledged but
/// unreplayed revocations (counting those of other surfaces) an import
/// stops with 503 and the counts of what it recorded. A 10M-line import
/// during an outage would otherwise grow the gateway by gigabytes.
pub const BACKLOG_MAX: u64 = 100_000;
/// Longest line accepted (a token is at most 8 KiB; room for its JSON).
pub const MAX_LINE: usize = 16 * 1024;
/// Most per-line errors listed in an answer.
pub const MAX_ERRORS: usize = 1000;

/// One import line in JSON: the admin API's shapes and the export's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine {
    kind: Option<String>,
    token: Option<String>,
    credential: Option<String>,
    family: Option<String>,
    token_type: Option<String>,
    fingerprint: Option<String>,
    scope: Option<ScopeKey>,
    jti: Option<String>,
    iss: Option<String>,
    sub: Option<String>,
    org: Option<String>,
    provider: Option<String>,
    revoked_at: Option<u64>,
    issued_at: Option<u64>,
    expires_at: Option<u64>,
    generation: Option<u32>,
    refresh: Option<bool>,
    superseded_at: Option<u64>,
    #[allow(dead_code)]
    source: Option<String>,
}

/// What one line became.
enum Parsed {
    Command(RevocationCommand),
    Expired,
    Blank,
}

/// The running totals of an import.
#[derive(Default, serde::Serialize)]
struct Summary {
    lines: u64,
    accepted: u64,
    changed: u64,
    expired: u64,
    rejected: u64,
    errors: Vec<LineError>,
    errors_truncated: bool,
}

#[derive(serde::Serialize)]
struct LineError {
    line: u64,
    error: &'static str,
}

impl Summary {
    fn reject(&mut self, line: u64, error: &'static str) {
        self.rejected += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(LineError { line, error });
        } else {
            self.errors_truncated = true;
        }
    }
}

/// Reads a body line by line, each bounded by [`MAX_LINE`].
struct Lines {
    body: Incoming,
    buf: BytesMut,
    /// Past a line over the bound: drop bytes until its newline.
    skipping: bool,
    ended: bool,
    number: u64,
}

/// One line read, or why not.
enum Line {
    Text(u64, Bytes),
    TooLong(u64),
}

impl Lines {
    fn new(body: Incoming) -> Self {
        Lines {
            body,
            buf: BytesMut::new(),
            skipping: false,
            ended: false,
            number: 0,
        }
    }

    /// The next line; `None` at the end of the body.
    async fn next(&mut self) -> Result<Option<Line>, hyper::Error> {
        loop {
            if let Some(nl) = memchr::memchr(b'\n', &self.buf) {
                let mut line = self.buf.split_to(nl + 1);
                line.truncate(nl);
                if self.skipping {
                    self.skipping = false;
                    continue;
                }
                self.number += 1;
                if line.len() > MAX_LINE {
                    return Ok(Some(Line::TooLong(self.number)));
                }
                return Ok(Some(Line::Text(self.number, line.freeze())));
            }
            if self.buf.len() > MAX_LINE {
                // No newline within the bound: report the line once, then
                // drop the rest of it as it arrives.
                self.buf.clear();
                if !self.skipping {
                    self.skipping = true;
                    self.number += 1;
                    return Ok(Some(Line::TooLong(self.number)));
                }
            }
            if self.ended {
                if self.buf.is_empty() || self.skipping {
                    return Ok(None);
                }
                // The last line, without a newline.
                self.number += 1;
                let line = std::mem::take(&mut self.buf).freeze();
                return Ok(Some(Line::Text(self.number, line)));
            }
            match self.body.frame().await {
                None => self.ended = true,
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Parses one line into a command (see the module doc for the forms).
async fn parse_line(
    rt: &Runtime,
    store: &dyn RevocationStore,
    line: &[u8],
) -> Result<Parsed, &'static str> {
    let line = std::str::from_utf8(line).map_err(|_| "the line is not UTF-8")?;
    let line = line.trim();
    if line.is_empty() {
        return Ok(Parsed::Blank);
    }
    if !line.starts_with('{') {
        return token_command(rt, store, line.to_string()).await;
    }
    let j: JsonLine = serde_json::from_str(line).map_err(|e| {
        // serde's message can quote the input (a token): keep its category.
        if e.is_syntax() || e.is_eof() {
            "the line is not valid JSON"
        } else {
            "unknown field or wrong type: see the import's line forms"
        }
    })?;
    let now = now_unix();
    let live = |exp: u64, cmd: RevocationCommand| {
        Ok(if exp <= now {
            Parsed::Expired
        } else {
            Parsed::Command(cmd)
        })
    };
    let fingerprint = |f: &Option<String>| {
        f.as_deref()
            .and_then(crate::credentials::Fingerprint::from_hex)
            .ok_or("fingerprint must be 32 hex characters")
    };
    // A rule's `revoked_at` may lead this clock by the allowed skew, no more.
    let past = |t: u64| {
        if t > now.saturating_add(rt.settings().lifetimes().clock_skew.as_secs()) {
            Err("revoked_at is in the future")
        } else {
            Ok(t)
        }
    };
    if j.kind.is_none() && j.credential.is_some() {
        return principal_command(rt, j);
    }
    match j.kind.as_deref() {
        Some("token") => {
            let fp = fingerprint(&j.fingerprint)?;
            let exp = j.expires_at.ok_or("a token rule needs expires_at")?;
            live(
                exp,
                RevocationCommand::Token(TokenRule {
                    fingerprint: fp,
                    expires_at: exp,
                }),
            )
        }
        Some("scope") => {
            let key = scope_key(j.sub, j.org, j.provider)?;
            let (Some(t), Some(exp)) = (j.revoked_at, j.expires_at) else {
                return Err("a scope rule needs revoked_at and expires_at");
            };
            let t = past(t)?;
            let cmd = RevocationCommand::Scope(ScopeRule {
                key,
                revoked_at: t,
                expires_at: exp,
            });
            admit(rt, store, &cmd)?;
            live(exp, cmd)
        }
        Some("bind") => {
            let fp = fingerprint(&j.fingerprint)?;
            let who = scope_key(j.sub, j.org, j.provider)?;
            let (Some(iat), Some(exp)) = (j.issued_at, j.expires_at) else {
                return Err("a binding needs issued_at and expires_at");
            };
            live(
                exp,
                RevocationCommand::Bind(Binding {
                    fingerprint: fp,
                    who,
                    issued_at: iat,
                    expires_at: exp,
                }),
            )
        }
        Some("family") => {
            let family = fingerprint(&j.family).map_err(|_| "family must be 32 hex characters")?;
            let exp = j.expires_at.ok_or("a family rule needs expires_at")?;
            let t = past(j.revoked_at.unwrap_or(now))?;
            live(
                exp,
                RevocationCommand::Family(FamilyRule {
                    family,
                    generation: j.generation,
                    revoked_at: t,
                    expires_at: exp,
                    members: Vec::new(),
                }),
            )
        }
        Some("join") => {
            let fp = fingerprint(&j.fingerprint)?;
            let family = fingerprint(&j.family).map_err(|_| "family must be 32 hex characters")?;
            let (Some(generation), Some(exp)) = (j.generation, j.expires_at) else {
                return Err("a family membership needs generation and expires_at");
            };
            live(
                exp,
                RevocationCommand::Join(Member {
                    fingerprint: fp,
                    family,
                    generation,
                    refresh: j.refresh.unwrap_or(false),
                    expires_at: exp,
                    superseded_at: j.superseded_at.unwrap_or(0),
                }),
            )
        }
        Some(_) => Err("unknown kind: token, scope, bind, family and join are imported"),
        None => {
            let given = usize::from(j.token.is_some())
                + usize::from(j.scope.is_some())
                + usize::from(j.jti.is_some());
            if given != 1
                || j.fingerprint.is_some()
                || j.sub.is_some()
                || j.revoked_at.is_some()
                || j.expires_at.is_some()
                || j.issued_at.is_some()
                || j.family.is_some()
                || j.token_type.is_some()
                || j.generation.is_some()
                || j.refresh.is_some()
                || j.superseded_at.is_some()
                || (j.iss.is_some() && j.jti.is_none())
            {
                return Err(
                    r#"give exactly one of {"token"}, {"scope"}, {"jti","iss"} or {"credential","sub"}, or a "kind" line as the export writes"#,
                );
            }
            if let Some(t) = j.token {
                return token_command(rt, store, t).await;
            }
            if let Some(scope) = j.scope {
                let key = scope_key(Some(scope.sub), scope.org, scope.provider)?;
                let cmd = RevocationCommand::Scope(rt.scope_rule(key));
                admit(rt, store, &cmd)?;
                return Ok(Parsed::Command(cmd));
            }
            let jti = j.jti.unwrap_or_default();
            if !rt.settings().revoke_by_jti() {
                return Err(
                    "revocation by jti is off: set tokens.revoke_by_jti = true on every instance",
                );
            }
            if jti.is_empty() || j.iss.as_deref().is_some_and(str::is_empty) {
                return Err("jti (and iss, when given) must be non-empty");
            }
            if jti.len() > 1024 || j.iss.as_deref().is_some_and(|i| i.len() > 1024) {
                return Err("jti and iss are at most 1024 bytes");
            }
            let fp = rt.key().jti_fingerprint(j.iss.as_deref(), &jti);
            Ok(Parsed::Command(RevocationCommand::Token(
                rt.token_rule(fp, None),
            )))
        }
    }
}

/// A principals line (`POST /admin/v1/principals`'s body): the binding of
/// a credential to its subject, as that endpoint records it, with its
/// bounds and messages. A family membership (`family`, `token_type`) is
/// not imported: the export writes none, and that endpoint records it.
fn principal_command(rt: &Runtime, j: JsonLine) -> Result<Parsed, &'static str> {
    if j.token.is_some()
        || j.scope.is_some()
        || j.jti.is_some()
        || j.iss.is_some()
        || j.fingerprint.is_some()
        || j.revoked_at.is_some()
        || j.generation.is_some()
        || j.refresh.is_some()
        || j.superseded_at.is_some()
    {
        return Err(
            r#"a principal line is {"credential","sub","org","provider","issued_at","expires_at"} alone"#,
        );
    }
    if j.family.is_some() || j.token_type.is_some() {
        return Err(
            r#"family is not imported on a principal line: give the membership as a {"kind":"join"} line (as the export writes it), or record it with POST /admin/v1/principals"#,
        );
    }
    let credential = j.credential.unwrap_or_default();
    if credential.is_empty() || !credential.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err("credential must be non-empty visible ASCII");
    }
    if credential.len() > crate::dialect::MAX_TOKEN_BYTES {
        return Err("credential is at most 8192 bytes");
    }
    let empty = |v: &Option<String>| v.as_deref().is_some_and(str::is_empty);
    let long = |v: &Option<String>| {
        v.as_ref()
            .is_some_and(|s| s.len() > crate::dialect::MAX_ID_LEN)
    };
    if j.sub.as_deref().is_none_or(str::is_empty) || empty(&j.org) || empty(&j.provider) {
        return Err("sub is required; org and provider, when given, must be non-empty");
    }
    if long(&j.sub) || long(&j.org) || long(&j.provider) {
        return Err("sub, org and provider are at most 256 bytes each");
    }
    let now = now_unix();
    // A line without `issued_at` is issued now: one whose expiry has passed
    // is expired, not inconsistent.
    let explicit_issue = j.issued_at.is_some();
    let binding = rt.binding(
        &credential,
        ScopeKey {
            sub: j.sub.unwrap_or_default(),
            org: j.org,
            provider: j.provider,
        },
        j.issued_at.unwrap_or(now),
        j.expires_at,
    );
    if explicit_issue && binding.issued_at > binding.expires_at {
        return Err("issued_at is after expires_at");
    }
    if binding.expires_at <= now {
        return Ok(Parsed::Expired);
    }
    Ok(Parsed::Command(RevocationCommand::Bind(binding)))
}

/// A raw token's rule, as `POST /admin/v1/revocations` makes it.
async fn token_command(
    rt: &Runtime,
    store: &dyn RevocationStore,
    token: String,
) -> Result<Parsed, &'static str> {
    if token.is_empty() || !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err("a token must be non-empty visible ASCII");
    }
    if token.len() > crate::dialect::MAX_TOKEN_BYTES {
        return Err("a token is at most 8192 bytes");
    }
    let headers = http::HeaderMap::new();
    let caller = Caller {
        headers: &headers,
        query: None,
        store,
        key_header: None,
    };
    rt.command(RevokeIntent::Token(token), &caller, RevokeMode::Terminate)
        .await
        .map(Parsed::Command)
        .ok_or("cannot revoke this token")
}

/// A scope key within the admin API's bounds.
fn scope_key(
    sub: Option<String>,
    org: Option<String>,
    provider: Option<String>,
) -> Result<ScopeKey, &'static str> {
    let empty = |v: &Option<String>| v.as_deref().is_some_and(str::is_empty);
    let sub = sub.filter(|s| !s.is_empty()).ok_or(
        "scope.sub is required; scope.org and scope.provider, when given, must be non-empty",
    )?;
    if empty(&org) || empty(&provider) {
        return Err(
            "scope.sub is required; scope.org and scope.provider, when given, must be non-empty",
        );
    }
    let long = |v: &Option<String>| {
        v.as_ref()
            .is_some_and(|s| s.len() > crate::dialect::MAX_ID_LEN)
    };
    if sub.len() > crate::dialect::MAX_ID_LEN || long(&org) || long(&provider) {
        return Err("scope.sub, scope.org and scope.provider are at most 256 bytes each");
    }
    Ok(ScopeKey { sub, org, provider })
}

/// The per-subject cap on scope rules, as for every scope revoke.
fn admit(
    rt: &Runtime,
    store: &dyn RevocationStore,
    cmd: &RevocationCommand,
) -> Result<(), &'static str> {
    match rt.scope_admission(cmd, store.cache()) {
        ScopeAdmission::Admitted => Ok(()),
        ScopeAdmission::SubjectTooLong => {
            Err("scope.sub, scope.org and scope.provider are at most 256 bytes each")
        }
        ScopeAdmission::CapReached => {
            Err("this subject already has revoke.max_scopes_per_subject scope rules")
        }
    }
}

/// Reads lines until a batch is full or the body ends; rejects bad lines
/// into `summary`. `Ok(false)` when the body has ended.
async fn read_batch(
    rt: &Runtime,
    store: &dyn RevocationStore,
    lines: &mut Lines,
    summary: &mut Summary,
    batch: &mut Vec<RevocationCommand>,
) -> Result<bool, hyper::Error> {
    while batch.len() < BATCH {
        let Some(line) = lines.next().await? else {
            return Ok(false);
        };
        match line {
            Line::TooLong(n) => {
                summary.lines = n;
                summary.reject(n, "the line is over 16 KiB");
            }
            Line::Text(n, text) => {
                summary.lines = n;
                match parse_line(rt, store, &text).await {
                    Ok(Parsed::Command(cmd)) => batch.push(cmd),
                    Ok(Parsed::Expired) => summary.expired += 1,
                    Ok(Parsed::Blank) => {}
                    Err(why) => summary.reject(n, why),
                }
            }
        }
    }
    Ok(true)
}

fn answer(status: StatusCode, summary: &Summary, failure: Option<&str>) -> Response<Body> {
    let mut v = serde_json::to_value(summary).unwrap_or_default();
    if let (Some(why), Some(obj)) = (failure, v.as_object_mut()) {
        obj.insert("error".into(), "temporarily_unavailable".into());
        obj.insert("error_description".into(), why.into());
    }
    json_response(status, Bytes::from(v.to_string())).map(crate::proxy::full)
}

/// `POST /admin/v1/revocations/import` (see the module doc).
pub(super) async fn import(gw: &Gateway, body: Incoming) -> Response<Body> {
    let rt = gw.runtime();
    let store: &dyn RevocationStore = gw.store().as_ref();
    let started = std::time::Instant::now();
    let mut lines = Lines::new(body);
    let mut summary = Summary::default();
    let mut batch = Vec::with_capacity(BATCH);
    let mut more = match read_batch(&rt, store, &mut lines, &mut summary, &mut batch).await {
        Ok(more) => more,
        Err(e) => return unreadable(e),
    };
    loop {
        if batch.is_empty() && !more {
            break;
        }
        let backlog = store.status().journal_backlog;
        if backlog >= BACKLOG_MAX {
            tracing::warn!(
                backlog,
                accepted = summary.accepted,
                "import stopped: the store's backlog is full (is Redis reachable?)"
            );
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &summary,
                Some(&format!("the store holds {backlog} revocations not yet written to Redis (at most {BACKLOG_MAX} while it is unreachable); the counts are of the batches before this one; import again once Redis is back (it merges)")),
            );
        }
        let applying = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        // The next batch is read and parsed while this one is written.
        let (applied, next) = if more {
            let (a, n) = tokio::join!(
                store.apply_batch(applying),
                read_batch(&rt, store, &mut lines, &mut summary, &mut batch)
            );
            (a, Some(n))
        } else {
            (store.apply_batch(applying).await, None)
        };
        match applied {
            Ok(answers) => {
                summary.accepted += answers.len() as u64;
                summary.changed +=
                    answers.iter().filter(|a| **a == Applied::Changed).count() as u64;
                crate::metrics::revocation_applied("admin", "import");
            }
            Err(e) => {
                crate::metrics::revocation_apply_failed("admin");
                let why = match e {
                    StoreError::Unconfirmed(_) => {
                        tracing::warn!(error = %e, "import batch recorded but not confirmed");
                        "a batch is recorded but not yet confirmed by every instance; the counts are of the batches before it; retry the import (it merges)"
                    }
                    _ => {
                        tracing::error!(error = %e, "import batch not recorded");
                        "a batch could not be recorded; the counts are of the batches before it; retry the import (it merges)"
                    }
                };
                return answer(StatusCode::SERVICE_UNAVAILABLE, &summary, Some(why));
            }
        }
        match next {
            None => more = false,
            Some(Ok(m)) => more = m,
            Some(Err(e)) => return unreadable(e),
        }
    }
    tracing::info!(
        lines = summary.lines,
        accepted = summary.accepted,
        changed = summary.changed,
        rejected = summary.rejected,
        took_ms = started.elapsed().as_millis() as u64,
        "bulk import done"
    );
    answer(StatusCode::OK, &summary, None)
}

fn unreadable(e: hyper::Error) -> Response<Body> {
    tracing::warn!(error = %e, "import body could not be read");
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "the body could not be read to its end",
    )
}

/// `GET /admin/v1/revocations/export` (see the module doc).
pub(super) fn export(gw: &Gateway) -> Response<Body> {
    let store = gw.store().clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, crate::proxy::BoxError>>(4);
    tokio::spawn(async move {
        if let Err(e) = write_export(store.as_ref(), &tx).await {
            tracing::warn!(error = %e, "export aborted");
            let _ = tx.send(Err(e.into())).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = Response::new(http_body_util::StreamBody::new(stream).boxed());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("the store could not be read: {0}")]
    Store(String),
    #[error("the client went away")]
    Gone,
}

async fn write_export(
    store: &dyn RevocationStore,
    tx: &tokio::sync::mpsc::Sender<Result<Frame<Bytes>, crate::proxy::BoxError>>,
) -> Result<(), ExportError> {
    const CHUNK: usize = 64 * 1024;
    let mut out: Vec<u8> = Vec::with_capacity(CHUNK * 2);
    let flush = |out: &mut Vec<u8>| {
        let bytes = Bytes::from(std::mem::replace(out, Vec::with_capacity(CHUNK * 2)));
        tx.send(Ok(Frame::data(bytes)))
    };
    #[derive(serde::Serialize)]
    struct Exported<'a> {
        #[serde(flatten)]
        cmd: &'a RevocationCommand,
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<&'static str>,
    }
    let line = |out: &mut Vec<u8>, cmd: &RevocationCommand, source: Option<&'static str>| {
        let _ = serde_json::to_writer(&mut *out, &Exported { cmd, source });
        out.push(b'\n');
    };
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .export_tokens(cursor.as_deref())
            .await
            .map_err(|e| ExportError::Store(e.to_string()))?;
        for t in &page.tokens {
            line(
                &mut out,
                &RevocationCommand::Token(TokenRule {
                    fingerprint: t.fingerprint,
                    expires_at: t.expires_at,
                }),
                Some(t.source),
            );
            if out.len() >= CHUNK {
                flush(&mut out).await.map_err(|_| ExportError::Gone)?;
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let now = now_unix();
    for rule in store.cache().scope_rules() {
        if rule.expires_at > now {
            line(&mut out, &RevocationCommand::Scope(rule), None);
            if out.len() >= CHUNK {
                flush(&mut out).await.map_err(|_| ExportError::Gone)?;
            }
        }
    }
    // Bindings, then families: a chunk at a time from the store, as the
    // tokens (millions of either are held one chunk at once, not whole).
    for families in [false, true] {
        let mut cursor: Option<String> = None;
        loop {
            let page = if families {
                store.export_families(cursor.as_deref()).await
            } else {
                store.export_bindings(cursor.as_deref()).await
            }
            .map_err(|e| ExportError::Store(e.to_string()))?;
            for cmd in &page.cmds {
                line(&mut out, cmd, None);
                if out.len() >= CHUNK {
                    flush(&mut out).await.map_err(|_| ExportError::Gone)?;
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    if !out.is_empty() {
        flush(&mut out).await.map_err(|_| ExportError::Gone)?;
    }
    Ok(())
}
