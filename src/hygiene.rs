//! Header hygiene both connection paths apply (RFC 9110 §7.6.1):
//! hop-by-hop fields and those `Connection` names are dropped both ways,
//! `X-Forwarded-For` and `Via` appended to, `X-Forwarded-Proto` and
//! `X-Forwarded-Host` set to what this hop saw.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop fields (RFC 9110 §7.6.1) besides `Upgrade`, which is kept on
/// upgrade requests; removed both ways on both paths.
pub(crate) static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers and those named in `Connection`; keeps
/// `Upgrade` + `Connection: upgrade` when `upgrade` is set.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if !headers.contains_key(header::CONNECTION) {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
        if !upgrade {
            headers.remove(header::UPGRADE);
        }
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(&name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

pub(crate) fn append_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let v = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => HeaderValue::from_str(&format!("{prev}, {value}")),
        _ => HeaderValue::from_str(value),
    };
    if let Ok(v) = v {
        headers.insert(name, v);
    }
}

/// An IP address as text, formatted into a stack buffer (no allocation).
pub(crate) fn ip_text(ip: std::net::IpAddr, buf: &mut [u8; 64]) -> &str {
    use std::io::Write as _;
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{ip}");
    let n = cur.position() as usize;
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

pub(crate) fn append_static(headers: &mut HeaderMap, name: HeaderName, value: &'static str) {
    if headers.contains_key(&name) {
        append_header(headers, name, value);
    } else {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

pub(crate) fn via_value(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "2 revgate",
        http::Version::HTTP_10 => "1.0 revgate",
        _ => "1.1 revgate",
    }
}

/// Whether a request asks to upgrade its connection (`Upgrade` and a
/// `Connection` naming it).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-keep"]);

        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }
}
