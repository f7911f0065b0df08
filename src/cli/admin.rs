//! `revgate admin revoke|lookup|unrevoke|list`: the admin API from a shell.
//!
//! ```text
//! revgate admin [--admin-url URL] [--output table|json] revoke   [--file F] | --scope-sub S [..] | --jti J [--iss I]
//!                                                     lookup   [--file F] | --fingerprint FP.. | --jti J [--iss I]
//!                                                     unrevoke [--file F] | --fingerprint FP.. | --scope-sub S [..] | --jti J
//!                                                     list     [tokens|scopes] [--page-size N] [--max N]
//!                                                     import   [--file F] [--request-lines N]
//!                                                     export   [--file F]
//! ```
//!
//! `import` and `export` are in `cli/bulk.rs`.
//!
//! Decisions:
//! - **Raw tokens never on the command line** (any user can read another's
//!   argv in `/proc`): they are read from standard input or `--file`, one
//!   per line, blank lines skipped, and are sent only in request bodies.
//!   Output names fingerprints, never tokens, so a terminal or a CI log
//!   keeps no secret.
//! - The URL comes from `--admin-url` or `REVGATE_ADMIN_URL` (default
//!   `http://127.0.0.1:9090`, the admin listener's default); the admin token
//!   from `REVGATE_ADMIN_TOKEN` (the variable the gateway itself reads) or
//!   `--admin-token-file`, never a flag.
//! - `list` walks every page (the API's cursor) unless `--max` stops it, so
//!   `revgate admin list -o json | jq length` counts every rule.
//! - Exit codes: 0 done; 1 the API refused or could not be reached (its
//!   `error_description` on stderr); 2 bad usage (clap's own).

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

/// How answers are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The API's JSON (an array, one element per token or rule).
    Json,
}

/// `revgate admin ...`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The admin listener's base URL.
    #[arg(
        long,
        env = "REVGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:9090",
        global = true
    )]
    pub admin_url: String,
    /// A file holding the admin token (else `REVGATE_ADMIN_TOKEN`).
    #[arg(long, global = true)]
    pub admin_token_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Names what a command acts on: tokens (from stdin or `--file`), or one of
/// the other kinds.
#[derive(Debug, Default, clap::Args)]
pub struct Targets {
    /// Read raw tokens from this file (one per line; `-` = stdin) instead
    /// of standard input.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// A token fingerprint (32 hex), instead of tokens; repeatable.
    #[arg(long)]
    pub fingerprint: Vec<String>,
    /// A scope rule's subject, instead of tokens.
    #[arg(long)]
    pub scope_sub: Option<String>,
    /// The scope rule's org (with --scope-sub).
    #[arg(long, requires = "scope_sub")]
    pub scope_org: Option<String>,
    /// The scope rule's provider (with --scope-sub).
    #[arg(long, requires = "scope_sub")]
    pub scope_provider: Option<String>,
    /// A JWT id, instead of tokens (needs tokens.revoke_by_jti).
    #[arg(long)]
    pub jti: Option<String>,
    /// The JWT's issuer (with --jti).
    #[arg(long, requires = "jti")]
    pub iss: Option<String>,
}

/// The admin actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Revoke tokens (read from stdin or --file), a scope, or a jti.
    Revoke(Targets),
    /// Say whether tokens (stdin or --file), fingerprints or a jti are revoked.
    Lookup(Targets),
    /// Remove revocations: tokens (stdin or --file), fingerprints, a scope or a jti.
    Unrevoke(Targets),
    /// List revocations: token rules (fingerprint, expiry, source) or scope rules.
    List {
        /// Which rules.
        #[arg(value_enum, default_value_t = ListKind::Tokens)]
        kind: ListKind,
        /// Rules asked for per request (1 to 1000).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=1000))]
        page_size: u16,
        /// Stop after this many rules.
        #[arg(long)]
        max: Option<usize>,
    },
    /// Who holds credentials (bindings, `/admin/v1/principals`).
    #[command(subcommand)]
    Principals(PrincipalAction),
    /// Import revocations in bulk (stdin or --file): raw tokens, one per
    /// line, or NDJSON in the admin API's or the export's shapes.
    Import(super::bulk::ImportArgs),
    /// Export every live rule as NDJSON (stdout or --file), importable.
    Export(super::bulk::ExportArgs),
}

/// `revgate admin principals ...`: credentials from stdin or `--file`,
/// one per line (never as arguments), or `--fingerprint`.
#[derive(Debug, clap::Subcommand)]
pub enum PrincipalAction {
    /// Bind credentials (stdin or --file) to a holder.
    Bind {
        /// The holder's subject.
        #[arg(long)]
        sub: String,
        /// The holder's org.
        #[arg(long)]
        org: Option<String>,
        /// The credentials' provider.
        #[arg(long)]
        provider: Option<String>,
        /// Issued at, unix seconds (default: now).
        #[arg(long)]
        issued_at: Option<u64>,
        /// Expires at, unix seconds (default: the credential's own, or tokens.max_lifetime).
        #[arg(long)]
        expires_at: Option<u64>,
        /// Read credentials from this file (`-` = stdin).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Show who holds credentials (stdin or --file) or fingerprints.
    Lookup(Credentials),
    /// Forget the bindings of credentials (stdin or --file) or fingerprints.
    Unbind(Credentials),
}

/// Credentials from stdin or `--file`, or fingerprints.
#[derive(Debug, Default, clap::Args)]
pub struct Credentials {
    /// Read credentials from this file (`-` = stdin).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// A credential's fingerprint (32 hex), instead; repeatable.
    #[arg(long, conflicts_with = "file")]
    pub fingerprint: Vec<String>,
}

impl Credentials {
    fn bodies(&self) -> Result<Vec<Value>, CliError> {
        if !self.fingerprint.is_empty() {
            return Ok(self
                .fingerprint
                .iter()
                .map(|f| json!({"fingerprint": f}))
                .collect());
        }
        Ok(read_tokens(self.file.as_ref())?
            .into_iter()
            .map(|c| json!({"credential": c}))
            .collect())
    }
}

/// What `list` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ListKind {
    /// Token revocations.
    Tokens,
    /// Scope rules.
    Scopes,
}

/// Why a command failed (printed as `revgate admin: ...`).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input on our side (no target, unreadable token file, ...).
    #[error("{0}")]
    Usage(String),
    /// The API could not be reached.
    #[error("{url}: {message}")]
    Unreachable {
        /// The admin URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The API answered an error.
    #[error("{status}: {description}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// Its `error_description` (or body).
        description: String,
    },
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Api {
    base: String,
    token: Option<String>,
    client: HttpsClient,
}

impl Api {
    fn new(args: &AdminArgs) -> Result<Api, CliError> {
        let token = admin_token(args)?;
        let base = args.admin_url.trim_end_matches('/').to_string();
        let https = connector(&base)?;
        Ok(Api {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |message: String| CliError::Unreachable {
            url: self.base.clone(),
            message,
        };
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| CliError::Usage(format!("bad --admin-url {url:?}: {e}")))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| unreachable("no answer in 30s".into()))?
            .map_err(|e| unreachable(format!("{e:?}")))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if !status.is_success() {
            let description = value
                .get("error_description")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            return Err(CliError::Refused {
                status,
                description,
            });
        }
        Ok(value)
    }
}

/// The admin API's connector: TLS for an `https://` URL (system roots),
/// plain HTTP otherwise.
pub(crate) fn connector(
    base: &str,
) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, CliError> {
    let tls = if base.starts_with("https://") {
        crate::tls::upstream_client_config(None, None, None)
            .map_err(|e| CliError::Usage(format!("TLS: {e}")))?
    } else {
        // Plain HTTP needs no trust roots; do not fail on a machine
        // without them.
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Usage(format!("TLS: {e}")))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
    };
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build())
}

/// The admin token: `--admin-token-file`, else `REVGATE_ADMIN_TOKEN`.
pub(crate) fn admin_token(args: &AdminArgs) -> Result<Option<String>, CliError> {
    Ok(match &args.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("REVGATE_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    })
}

/// Reads raw tokens, one per line, from `file` (`-` or none: stdin).
fn read_tokens(file: Option<&PathBuf>) -> Result<Vec<String>, CliError> {
    let mut text = String::new();
    match file {
        Some(p) if p.as_os_str() != "-" => {
            text = std::fs::read_to_string(p)
                .map_err(|e| CliError::Usage(format!("{}: {e}", p.display())))?;
        }
        _ => {
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::Usage(format!("standard input: {e}")))?;
        }
    }
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if tokens.is_empty() {
        return Err(CliError::Usage(
            "no token read: give tokens on standard input or in --file, one per line (never as arguments)".into(),
        ));
    }
    Ok(tokens)
}

/// The request bodies a [`Targets`] names, one per token or rule.
fn bodies(t: &Targets, scope_ok: bool, fingerprint_ok: bool) -> Result<Vec<Value>, CliError> {
    let others = usize::from(!t.fingerprint.is_empty())
        + usize::from(t.scope_sub.is_some())
        + usize::from(t.jti.is_some());
    if others > 1 || (others == 1 && t.file.is_some()) {
        return Err(CliError::Usage(
            "name one kind of target: tokens (stdin or --file), --fingerprint, --scope-sub or --jti".into(),
        ));
    }
    if !t.fingerprint.is_empty() {
        if !fingerprint_ok {
            return Err(CliError::Usage(
                "revoke by token, scope or jti: a fingerprint alone does not say when the token expires".into(),
            ));
        }
        return Ok(t
            .fingerprint
            .iter()
            .map(|f| json!({"fingerprint": f}))
            .collect());
    }
    if let Some(sub) = &t.scope_sub {
        if !scope_ok {
            return Err(CliError::Usage(
                "look up tokens, fingerprints or a jti; `revgate admin list scopes` lists scope rules".into(),
            ));
        }
        let mut scope = json!({"sub": sub});
        if let Some(o) = &t.scope_org {
            scope["org"] = json!(o);
        }
        if let Some(p) = &t.scope_provider {
            scope["provider"] = json!(p);
        }
        return Ok(vec![json!({"scope": scope})]);
    }
    if let Some(jti) = &t.jti {
        let mut body = json!({"jti": jti});
        if let Some(iss) = &t.iss {
            body["iss"] = json!(iss);
        }
        return Ok(vec![body]);
    }
    Ok(read_tokens(t.file.as_ref())?
        .into_iter()
        .map(|token| json!({"token": token}))
        .collect())
}

/// Runs one admin command; prints its answer on stdout.
pub fn run(args: AdminArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        match &args.action {
            Action::Import(i) => return super::bulk::import(&args, i).await,
            Action::Export(e) => return super::bulk::export(&args, e).await,
            _ => {}
        }
        let api = Api::new(&args)?;
        let rows = match &args.action {
            Action::Revoke(t) => {
                let mut out = Vec::new();
                for body in bodies(t, true, false)? {
                    out.push(
                        api.call(Method::POST, "/admin/v1/revocations", Some(body))
                            .await?,
                    );
                }
                out
            }
            Action::Lookup(t) => {
                let mut out = Vec::new();
                for body in bodies(t, false, true)? {
                    out.push(
                        api.call(Method::POST, "/admin/v1/revocations/lookup", Some(body))
                            .await?,
                    );
                }
                out
            }
            Action::Unrevoke(t) => {
                let mut out = Vec::new();
                for body in bodies(t, true, true)? {
                    // The answer says only `removed`: name what was asked,
                    // by fingerprint for a token.
                    let named = match body.get("token").and_then(Value::as_str) {
                        Some(tok) => {
                            let fp = api
                                .call(
                                    Method::POST,
                                    "/admin/v1/revocations/lookup",
                                    Some(json!({"token": tok})),
                                )
                                .await?;
                            json!({"fingerprint": fp.get("fingerprint")})
                        }
                        None => body.clone(),
                    };
                    let mut answer = api
                        .call(Method::DELETE, "/admin/v1/revocations", Some(body))
                        .await?;
                    if let (Value::Object(a), Value::Object(n)) = (&mut answer, named) {
                        a.extend(n);
                    }
                    out.push(answer);
                }
                out
            }
            Action::List {
                kind,
                page_size,
                max,
            } => list(&api, *kind, *page_size, *max).await?,
            Action::Principals(p) => principals(&api, p).await?,
            Action::Import(_) | Action::Export(_) => Vec::new(),
        };
        print(&args, &rows);
        Ok(())
    })
}

async fn principals(api: &Api, action: &PrincipalAction) -> Result<Vec<Value>, CliError> {
    let mut out = Vec::new();
    match action {
        PrincipalAction::Bind {
            sub,
            org,
            provider,
            issued_at,
            expires_at,
            file,
        } => {
            for credential in read_tokens(file.as_ref())? {
                let mut body = json!({"credential": credential, "sub": sub});
                for (k, v) in [("org", org), ("provider", provider)] {
                    if let Some(v) = v {
                        body[k] = json!(v);
                    }
                }
                for (k, v) in [("issued_at", issued_at), ("expires_at", expires_at)] {
                    if let Some(v) = v {
                        body[k] = json!(v);
                    }
                }
                out.push(
                    api.call(Method::POST, "/admin/v1/principals", Some(body))
                        .await?,
                );
            }
        }
        PrincipalAction::Lookup(c) => {
            for body in c.bodies()? {
                match api
                    .call(Method::POST, "/admin/v1/principals/lookup", Some(body))
                    .await
                {
                    Ok(v) => out.push(v),
                    // Not bound: a row saying so, not a failure.
                    Err(CliError::Refused { status, .. })
                        if status == http::StatusCode::NOT_FOUND =>
                    {
                        out.push(json!({"sub": null}));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        PrincipalAction::Unbind(c) => {
            for body in c.bodies()? {
                out.push(
                    api.call(Method::DELETE, "/admin/v1/principals", Some(body))
                        .await?,
                );
            }
        }
    }
    Ok(out)
}

async fn list(
    api: &Api,
    kind: ListKind,
    page_size: u16,
    max: Option<usize>,
) -> Result<Vec<Value>, CliError> {
    let (path, field) = match kind {
        ListKind::Tokens => ("/admin/v1/revocations", "revocations"),
        ListKind::Scopes => ("/admin/v1/scopes", "scopes"),
    };
    let max = max.unwrap_or(usize::MAX);
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = format!("?limit={page_size}");
        if let Some(c) = &cursor {
            query.push_str("&cursor=");
            query.extend(form_urlencoded::byte_serialize(c.as_bytes()));
        }
        let page = api
            .call(Method::GET, &format!("{path}{query}"), None)
            .await?;
        if let Some(items) = page.get(field).and_then(Value::as_array) {
            rows.extend(items.iter().cloned());
        }
        if rows.len() >= max {
            rows.truncate(max);
            return Ok(rows);
        }
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(rows),
        }
    }
}

/// A table's cells from one answer.
type Cells = fn(&Value) -> Vec<String>;

fn print(args: &AdminArgs, rows: &[Value]) {
    if args.output == Output::Json {
        println!("{}", Value::Array(rows.to_vec()));
        return;
    }
    let (head, cells): (&[&str], Cells) = match &args.action {
        // They print their own summaries.
        Action::Import(_) | Action::Export(_) => return,
        Action::Revoke(_) => (&["KIND", "TARGET", "EXPIRES_AT", "CHANGED"], |v| {
            let r = &v["recorded"];
            let target = match r["kind"].as_str() {
                Some("scope") => scope_name(r),
                _ => text(&r["fingerprint"]),
            };
            vec![
                text(&r["kind"]),
                target,
                text(&r["expires_at"]),
                text(&v["changed"]),
            ]
        }),
        Action::Lookup(_) => (&["FINGERPRINT", "REVOKED"], |v| {
            vec![text(&v["fingerprint"]), text(&v["revoked"])]
        }),
        Action::Unrevoke(_) => (&["TARGET", "REMOVED"], |v| {
            let target = if v.get("scope").is_some() {
                scope_name(&v["scope"])
            } else if v.get("jti").is_some() {
                format!("jti {}", text(&v["jti"]))
            } else {
                text(&v["fingerprint"])
            };
            vec![target, text(&v["removed"])]
        }),
        Action::List {
            kind: ListKind::Tokens,
            ..
        } => (&["FINGERPRINT", "EXPIRES_AT", "SOURCE"], |v| {
            vec![
                text(&v["fingerprint"]),
                text(&v["expires_at"]),
                text(&v["source"]),
            ]
        }),
        Action::List {
            kind: ListKind::Scopes,
            ..
        } => (&["SCOPE", "REVOKED_AT", "EXPIRES_AT"], |v| {
            vec![
                scope_name(v),
                text(&v["revoked_at"]),
                text(&v["expires_at"]),
            ]
        }),
        Action::Principals(PrincipalAction::Unbind(_)) => {
            (&["REMOVED"], |v| vec![text(&v["removed"])])
        }
        Action::Principals(_) => (
            &[
                "FINGERPRINT",
                "HOLDER",
                "ISSUED_AT",
                "EXPIRES_AT",
                "REVOKED",
            ],
            |v| {
                vec![
                    text(&v["fingerprint"]),
                    if v["sub"].is_null() {
                        "(not bound)".into()
                    } else {
                        scope_name(v)
                    },
                    text(&v["issued_at"]),
                    text(&v["expires_at"]),
                    text(&v["revoked"]),
                ]
            },
        ),
    };
    let table: Vec<Vec<String>> = rows.iter().map(cells).collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            table
                .iter()
                .map(|r| r.get(i).map_or(0, String::len))
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cols: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(head.to_vec());
    for r in &table {
        line(r.iter().map(String::as_str).collect());
    }
}

/// A JSON value as a cell: strings bare, `null` as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `sub=alice org=acme provider=-` for a scope key (or rule).
fn scope_name(v: &Value) -> String {
    format!(
        "sub={} org={} provider={}",
        text(&v["sub"]),
        text(&v["org"]),
        text(&v["provider"])
    )
}
