//! The admission stages both connection paths share — which route a request
//! takes, whether it is a revoke call, and the verdict on its credential —
//! each ending in a [`Refusal`] when the gateway answers itself. The hyper
//! path ([`crate::proxy`]) and the HTTP/1.1 fast path ([`crate::h1`]) both
//! describe the request as a [`Head`] and call [`route`] then [`judge`];
//! what lies between (reading a form body on the hyper path, handing a
//! request the fast path does not frame over to hyper) is theirs.

use crate::credentials::{Fingerprint, Headers};
use crate::proxy::{DialectEntry, Runtime};
use crate::refusal::Refusal;
use crate::store::RevocationStore;

/// What admission reads of a request: its head, as either path parsed it.
pub(crate) struct Head<'a, H: Headers + ?Sized> {
    /// `true` for an HTTP/1.1 request, which must carry exactly one `Host`.
    pub http11: bool,
    /// The method.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query string, if any.
    pub query: Option<&'a str>,
    /// The target's authority (HTTP/2 `:authority`, an absolute-form
    /// target), else the `Host` value; routing reads its host.
    pub authority: Option<&'a [u8]>,
    /// How many `Host` fields the request carried.
    pub hosts: usize,
    /// The header fields.
    pub headers: &'a H,
}

/// Where a routed request goes.
pub(crate) enum Routed<'r> {
    /// An identity provider's feed path (`crate::feeds`), whatever the
    /// method and whether or not a route matches: the gateway answers it.
    Feed(crate::feeds::FeedKind),
    /// A revoke endpoint's path with the vendor's method: a revoke call.
    RevokeCall {
        /// Index of the route in `settings.routes`.
        route: usize,
        /// The endpoint's dialect.
        dialect: &'r DialectEntry,
    },
    /// An ordinary request, judged by its credential.
    Ordinary {
        /// Index of the route in `settings.routes`.
        route: usize,
        /// The revoke endpoint on this path, when the method was not the
        /// vendor's (a terminating endpoint answers that itself, in the
        /// vendor's format, once the request passed the verdict).
        revoke_path: Option<&'r DialectEntry>,
    },
}

/// Stage 1: the request's route (404 when none matches; 400 for an
/// HTTP/1.1 request without exactly one `Host`, RFC 9112 §3.2) and whether
/// it is a revoke call or an identity provider's feed.
pub(crate) fn route<'r, H: Headers + ?Sized>(
    rt: &'r Runtime,
    head: &Head<'_, H>,
) -> Result<Routed<'r>, Refusal> {
    if head.http11 && head.hosts != 1 {
        return Err(Refusal::BadHost);
    }
    // Feeds answer at the gateway: no route needed.
    if let Some(feed) = rt.feed(head.path) {
        return Ok(Routed::Feed(feed));
    }
    let host = match (rt.host_routes(), head.authority) {
        (true, Some(a)) => host_of(a),
        _ => None,
    };
    let route = rt
        .route(host.as_deref(), head.path)
        .ok_or(Refusal::NoRoute)?;
    let revoke_path = rt.dialect(head.path);
    Ok(match revoke_path {
        Some(d) if d.dialect.method().as_str() == head.method => {
            Routed::RevokeCall { route, dialect: d }
        }
        _ => Routed::Ordinary { route, revoke_path },
    })
}

/// Stage 2: the verdict on the request's credential (`form`: a form body
/// the path read, which may carry `access_token`): on, with the
/// credential's fingerprint if it had one, or refused (401, 400, 503).
pub(crate) async fn judge<H: Headers + ?Sized>(
    rt: &Runtime,
    store: &dyn RevocationStore,
    head: &Head<'_, H>,
    form: Option<&[u8]>,
) -> Result<Option<Fingerprint>, Refusal> {
    rt.checker()
        .judge(head.headers, head.query, form, store)
        .await
        .admission()
}

/// The host of an authority or `Host` value, lower-cased and without its
/// port (IPv6 brackets kept); `None` when it is not visible ASCII.
pub(crate) fn host_of(value: &[u8]) -> Option<String> {
    let h = std::str::from_utf8(value).ok()?;
    if !h.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return None;
    }
    let host = match h.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !h.ends_with(']') =>
        {
            host
        }
        _ => h,
    };
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(
            host_of(b"API.example.com:8080").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(host_of(b"[::1]").as_deref(), Some("[::1]"));
        assert_eq!(host_of(b"[::1]:443").as_deref(), Some("[::1]"));
        assert_eq!(
            host_of(b"api.example.com").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(host_of("h\u{e9}st".as_bytes()), None);
        assert_eq!(host_of(b"a b"), None);
    }
}
