//! `GET /admin/v1/revocations?limit=&cursor=`: one page of live token
//! revocations, `{"revocations":[{"fingerprint","expires_at","source"}],
//! "next_cursor"}`; `next_cursor` is `null` on the last page.
//!
//! `limit` is 1 to 1000 (default 100), as for `/admin/v1/scopes`. The
//! cursor is opaque and belongs to the store that made it: the embedded
//! store pages in fingerprint order (keyset, no repeats or gaps), Redis by
//! its `SCAN` cursor (every rule at least once; a page may be short, so
//! walk until `next_cursor` is `null`). Only fingerprints are listed: the
//! gateway never has the tokens.

use bytes::Bytes;
use http::{Response, StatusCode};

use super::{bad_limit, error, page_limit, DEFAULT_PAGE};
use crate::proxy::{full, Body, Gateway};
use crate::store::ListError;
use crate::verdict::json_response;

/// Answers one page (see the module doc).
pub(super) async fn tokens_page(gw: &Gateway, query: Option<&str>) -> Response<Body> {
    let mut limit = DEFAULT_PAGE;
    let mut cursor = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*name {
            "limit" => match page_limit(&value) {
                Some(n) => limit = n,
                None => return bad_limit(),
            },
            "cursor" => cursor = Some(value.into_owned()),
            _ => {}
        }
    }
    match gw.store().list_tokens(cursor.as_deref(), limit).await {
        Ok(page) => {
            let body = serde_json::json!({
                "revocations": page.tokens,
                "next_cursor": page.next,
            });
            json_response(StatusCode::OK, Bytes::from(body.to_string())).map(full)
        }
        Err(ListError::BadCursor) => error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "cursor is not one this API gave out",
        ),
        Err(ListError::Store(e)) => {
            tracing::warn!(error = %e, "admin listing failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the store could not be reached",
            )
        }
    }
}
