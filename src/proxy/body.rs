//! Client request bodies on the hyper path: streamed on with trailers
//! dropped and an idle timeout, or read whole (a form that may carry an
//! `access_token`, a revoke call's body) under a limit.

use bytes::Bytes;
use http::header::{self, HeaderMap};
use hyper::body::Incoming;

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::credentials::{self};
use crate::refusal::Refusal;

/// A client's request body as forwarded: its trailer section is dropped
/// (as nginx does), since a trailer field could carry a credential that
/// was never judged, and it fails when it makes no progress for
/// `server.body_idle_timeout` ([`crate::idle`]).
pub(crate) fn incoming_request(rt: &Runtime, body: Incoming) -> Body {
    let body = body.map_frame(|frame| {
        if frame.is_trailers() {
            http_body::Frame::data(Bytes::new())
        } else {
            frame
        }
    });
    crate::idle::IdleBody::new(body, rt.settings.body_idle_timeout()).boxed()
}

/// Reads a form-encoded request body (when `tokens.form_body_limit` is on)
/// so that its `access_token` can be judged; returns it with the body to
/// forward. Past the limit the request is refused: forwarding it would hand
/// the upstream a token nobody judged.
pub(crate) async fn read_form(
    rt: &Runtime,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<(Option<Bytes>, Body), Refusal> {
    let limit = rt.settings.form_body_limit();
    if limit == 0 || !credentials::is_form(headers) || http_body::Body::is_end_stream(&body) {
        return Ok((None, incoming_request(rt, body)));
    }
    match read_limited(rt, headers, body, limit).await {
        Ok(bytes) => Ok((Some(bytes.clone()), full(bytes))),
        Err(BodyError::TooLarge) => Err(Refusal::FormTooLarge),
        Err(BodyError::Read(e)) => Err(Refusal::ClientBody(e)),
        Err(BodyError::Idle) => Err(Refusal::ClientTimeout),
    }
}

pub(crate) enum BodyError {
    TooLarge,
    Read(String),
    /// No progress for `server.body_idle_timeout`.
    Idle,
}

pub(crate) async fn read_limited(
    rt: &Runtime,
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let body = crate::idle::IdleBody::new(body, rt.settings.body_idle_timeout());
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) if crate::idle::is_idle(&*e) => Err(BodyError::Idle),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}
