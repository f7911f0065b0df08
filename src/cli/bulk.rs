//! `revgate admin import` and `revgate admin export`: bulk revocations from
//! a shell (issue 18), over the admin API's streamed endpoints
//! (`crate::admin`'s `bulk.rs` documents the line forms).
//!
//! ```text
//! revgate admin import [--file F] [--request-lines N]    < tokens.txt | rules.ndjson
//! revgate admin export [--file F]                        > rules.ndjson
//! ```
//!
//! Decisions:
//! - **Streamed, flat memory**: the input is read in 64 KiB blocks and
//!   forwarded as it is read; nothing holds more than a block and a few in
//!   flight, whatever the file's size. The same for the export's body.
//! - **Requests of `--request-lines` lines** (default 100,000): each import
//!   request's answer says, durably, what it accepted, so a summary always
//!   counts only what is recorded. If the gateway dies mid-import (or the
//!   store fails), the summary printed is of the requests answered before
//!   (exit 1), and running the same import again is safe: every rule merges.
//!   A request is cut only at a newline, so line numbers stay exact: the
//!   API's per-request numbers are shifted by the lines sent before.
//! - **Progress on stderr** after each request (lines, accepted, rejected,
//!   rate); the summary on stdout (`-o json` for the API's counts, plus
//!   `seconds`), the rejected lines by number with why (never their
//!   content: a line may be a token).
//! - A line rejected is not fatal: exit 0 when the import ran through, even
//!   with rejected lines (the summary says how many); exit 1 only when the
//!   API could not be reached or refused a request.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::admin::{admin_token, connector, AdminArgs, CliError, Output};

/// `revgate admin import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Read from this file (`-` = stdin) instead of standard input.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Lines per import request (each answered once durable).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_lines: u64,
}

/// `revgate admin export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

type ImportBody = BoxBody<Bytes, std::io::Error>;

/// What the reader thread hands over.
enum Block {
    /// Bytes of the current request.
    Data(Bytes),
    /// The current request is full (it ends at a newline).
    Cut,
}

/// Reads `file` (or stdin) in blocks, cut after every `per_request` lines.
fn spawn_reader(
    file: Option<PathBuf>,
    per_request: u64,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Block>>,
) {
    std::thread::spawn(move || {
        let mut input: Box<dyn std::io::Read> = match &file {
            Some(p) if p.as_os_str() != "-" => match std::fs::File::open(p) {
                Ok(f) => Box::new(f),
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", p.display()),
                    )));
                    return;
                }
            },
            _ => Box::new(std::io::stdin()),
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut lines = 0u64;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let need = per_request - lines;
                let mut seen = 0u64;
                let cut = rest.iter().position(|&b| {
                    seen += u64::from(b == b'\n');
                    seen == need
                });
                match cut {
                    Some(at) => {
                        let (head, tail) = rest.split_at(at + 1);
                        if tx
                            .blocking_send(Ok(Block::Data(Bytes::copy_from_slice(head))))
                            .is_err()
                            || tx.blocking_send(Ok(Block::Cut)).is_err()
                        {
                            return;
                        }
                        lines = 0;
                        rest = tail;
                    }
                    None => {
                        lines += seen;
                        if tx
                            .blocking_send(Ok(Block::Data(Bytes::copy_from_slice(rest))))
                            .is_err()
                        {
                            return;
                        }
                        rest = &[];
                    }
                }
            }
        }
    });
}

/// The running totals, over requests.
#[derive(Default)]
struct Totals {
    lines: u64,
    accepted: u64,
    changed: u64,
    expired: u64,
    rejected: u64,
    errors: Vec<Value>,
    errors_truncated: bool,
}

impl Totals {
    /// Adds one request's answer; its line numbers shifted by `offset`.
    fn add(&mut self, answer: &Value, offset: u64) {
        let n = |k: &str| answer.get(k).and_then(Value::as_u64).unwrap_or(0);
        self.accepted += n("accepted");
        self.changed += n("changed");
        self.expired += n("expired");
        self.rejected += n("rejected");
        self.errors_truncated |= answer
            .get("errors_truncated")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        for e in answer
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if self.errors.len() >= 10_000 {
                self.errors_truncated = true;
                break;
            }
            let line = e.get("line").and_then(Value::as_u64).unwrap_or(0) + offset;
            self.errors.push(
                json!({"line": line, "error": e.get("error").cloned().unwrap_or(Value::Null)}),
            );
        }
    }

    fn json(&self, seconds: f64) -> Value {
        json!({
            "lines": self.lines,
            "accepted": self.accepted,
            "changed": self.changed,
            "expired": self.expired,
            "rejected": self.rejected,
            "errors": self.errors,
            "errors_truncated": self.errors_truncated,
            "seconds": (seconds * 1000.0).round() / 1000.0,
        })
    }

    fn print(&self, output: Output, seconds: f64, complete: bool) {
        let mut out = std::io::stdout().lock();
        if output == Output::Json {
            let mut v = self.json(seconds);
            v["complete"] = json!(complete);
            let _ = writeln!(out, "{v}");
            return;
        }
        let rate = if seconds > 0.0 {
            self.accepted as f64 / seconds
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "accepted  {} ({} new){}",
            self.accepted,
            self.changed,
            if complete {
                ""
            } else {
                "  (import INCOMPLETE: see the error)"
            }
        );
        let _ = writeln!(out, "rejected  {}", self.rejected);
        for e in &self.errors {
            let _ = writeln!(
                out,
                "  line {}: {}",
                e["line"],
                e["error"].as_str().unwrap_or("?")
            );
        }
        if self.errors_truncated {
            let _ = writeln!(out, "  (more rejected lines not listed)");
        }
        let _ = writeln!(out, "expired   {}", self.expired);
        let _ = writeln!(out, "lines     {}", self.lines);
        let _ = writeln!(out, "duration  {seconds:.2} s ({rate:.0} accepted/s)");
    }
}

/// `revgate admin import` (see the module doc).
pub async fn import(args: &AdminArgs, i: &ImportArgs) -> Result<(), CliError> {
    let base = args.admin_url.trim_end_matches('/').to_string();
    let token = admin_token(args)?;
    let client: Client<_, ImportBody> =
        Client::builder(TokioExecutor::new()).build(connector(&base)?);
    let url = format!("{base}/admin/v1/revocations/import");
    let (tx, mut blocks) = tokio::sync::mpsc::channel(16);
    spawn_reader(i.file.clone(), i.request_lines, tx);
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut offset = 0u64;
    let mut input_done = false;
    let fail = |totals: &Totals, e: CliError| {
        totals.print(args.output, started.elapsed().as_secs_f64(), false);
        Err(e)
    };
    while !input_done {
        // The first block decides whether there is a request at all.
        let first = match blocks.recv().await {
            None => break,
            Some(Err(e)) => {
                return fail(&totals, CliError::Usage(format!("reading the input: {e}")))
            }
            Some(Ok(Block::Cut)) => continue,
            Some(Ok(Block::Data(d))) => d,
        };
        let (body_tx, body_rx) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(8);
        let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(http::header::CONTENT_TYPE, "application/x-ndjson");
        if let Some(t) = &token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(StreamBody::new(stream).boxed())
            .map_err(|e| CliError::Usage(format!("bad --admin-url {url:?}: {e}")))?;
        let blocks_ref = &mut blocks;
        // Forwards this request's blocks; ends its body (drops the sender)
        // when done. Returns the newlines sent, whether the input ended,
        // and a read error.
        let forward = async move {
            let body_tx = body_tx;
            let mut sent_lines = 0u64;
            let mut next = Some(first);
            loop {
                if let Some(d) = next.take() {
                    sent_lines += d.iter().filter(|&&b| b == b'\n').count() as u64;
                    // The API stopped reading (it answered early): its
                    // answer says why.
                    if body_tx.send(Ok(Frame::data(d))).await.is_err() {
                        return (sent_lines, false, None);
                    }
                }
                match blocks_ref.recv().await {
                    None => return (sent_lines, true, None),
                    Some(Ok(Block::Cut)) => return (sent_lines, false, None),
                    Some(Ok(Block::Data(d))) => next = Some(d),
                    Some(Err(e)) => return (sent_lines, true, Some(e)),
                }
            }
        };
        let answering = async {
            let resp = client.request(req).await;
            match resp {
                Ok(r) => {
                    let status = r.status();
                    let bytes = r.into_body().collect().await.map(|c| c.to_bytes());
                    Ok((status, bytes))
                }
                Err(e) => Err(e),
            }
        };
        let ((sent_lines, ended, read_error), answered) = tokio::join!(forward, answering);
        input_done = ended;
        let unreachable = |message: String| CliError::Unreachable {
            url: base.clone(),
            message,
        };
        let (status, bytes) = match answered {
            Ok((status, Ok(bytes))) => (status, bytes),
            Ok((_, Err(e))) => return fail(&totals, unreachable(e.to_string())),
            Err(e) => return fail(&totals, unreachable(format!("{e:?}"))),
        };
        let answer: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        // A 503 still counts what the batches before the failure recorded.
        if status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE {
            totals.add(&answer, offset);
        }
        // The API counts the last line even without its newline.
        let request_lines = answer
            .get("lines")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .max(sent_lines);
        if status != StatusCode::OK {
            let description = answer
                .get("error_description")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| answer.to_string());
            return fail(
                &totals,
                CliError::Refused {
                    status,
                    description,
                },
            );
        }
        offset += request_lines;
        totals.lines = offset;
        if let Some(e) = read_error {
            return fail(&totals, CliError::Usage(format!("reading the input: {e}")));
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "import: {} lines, {} accepted, {} rejected, {:.0} accepted/s",
            totals.lines,
            totals.accepted,
            totals.rejected,
            totals.accepted as f64 / secs.max(1e-9)
        );
    }
    totals.print(args.output, started.elapsed().as_secs_f64(), true);
    Ok(())
}

/// `revgate admin export` (see the module doc).
pub async fn export(args: &AdminArgs, e: &ExportArgs) -> Result<(), CliError> {
    let base = args.admin_url.trim_end_matches('/').to_string();
    let token = admin_token(args)?;
    let client: Client<_, http_body_util::Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector(&base)?);
    let url = format!("{base}/admin/v1/revocations/export");
    let mut req = Request::builder().method(Method::GET).uri(&url);
    if let Some(t) = &token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(http_body_util::Empty::new())
        .map_err(|e| CliError::Usage(format!("bad --admin-url {url:?}: {e}")))?;
    let unreachable = |message: String| CliError::Unreachable {
        url: base.clone(),
        message,
    };
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| unreachable("no answer in 30s".into()))?
        .map_err(|e| unreachable(format!("{e:?}")))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        return Err(CliError::Refused {
            status,
            description: v
                .get("error_description")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
        });
    }
    let mut out: Box<dyn std::io::Write> = match &e.file {
        Some(p) if p.as_os_str() != "-" => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .map_err(|e| CliError::Usage(format!("{}: {e}", p.display())))?,
        )),
        _ => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut lines = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| unreachable(format!("the export broke off after {lines} rules: {e}")))?;
        if let Ok(data) = frame.into_data() {
            lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
            out.write_all(&data)
                .map_err(|e| CliError::Usage(format!("writing the export: {e}")))?;
        }
    }
    out.flush()
        .map_err(|e| CliError::Usage(format!("writing the export: {e}")))?;
    eprintln!(
        "export: {lines} rules in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
