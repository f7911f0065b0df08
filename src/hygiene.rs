//! Header hygiene both connection paths apply (RFC 9110 §7.6.1):
//! hop-by-hop fields and those `Connection` names are dropped both ways,
//! `X-Forwarded-For` and `Via` appended to, `X-Forwarded-Proto` and
//! `X-Forwarded-Host` set to what this hop saw.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop fields (RFC 9110 §7.6.1) besides `Upgrade`, which is kept on
/// upgrade requests; removed both ways on both paths. [`known`] encodes
/// this list (and [`SET_BY_GATEWAY`]) as a switch; the lists are the
/// tests' statement of it.
#[cfg(test)]
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

/// Which way a message crosses this hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client to upstream.
    Request,
    /// Upstream to client.
    Response,
}

/// What becomes of one header field crossing this hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Sent on as it is.
    Keep,
    /// Dropped: hop-by-hop, or named by the message's `Connection`.
    Drop,
    /// Written by the gateway instead (the upstream's `Host`, this hop's
    /// `X-Forwarded-*`) or joined into its own value (`Via`,
    /// `X-Forwarded-For`).
    Gateway,
}

/// The one classifier both paths render from (RFC 9110 §7.6.1, §7.6.3):
/// `name` (any case) crossing in `dir`, `connection_named` when the
/// message's `Connection` field lists it, `upgrade` for an upgrade whose
/// `Upgrade` field must survive. Framing fields (`Content-Length`,
/// `Transfer-Encoding` aside, which is hop-by-hop) and `Host` are never
/// dropped for being `Connection`-named: the relay and the routing depend on
/// them.
pub(crate) fn field_fate(
    name: &[u8],
    dir: Direction,
    connection_named: bool,
    upgrade: bool,
) -> Fate {
    match known(name) {
        Known::Upgrade => {
            if upgrade {
                Fate::Keep
            } else {
                Fate::Drop
            }
        }
        Known::HopByHop => Fate::Drop,
        Known::Via => Fate::Gateway,
        Known::Host | Known::Forwarded if dir == Direction::Request => Fate::Gateway,
        // Never dropped for being named: the relay and the routing depend on them.
        Known::Host | Known::ContentLength => Fate::Keep,
        _ if connection_named => Fate::Drop,
        _ => Fate::Keep,
    }
}

/// The fields [`field_fate`] tells apart, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    Upgrade,
    /// In [`HOP_BY_HOP`].
    HopByHop,
    Via,
    Host,
    /// `X-Forwarded-For`, `-Proto`, `-Host`.
    Forwarded,
    ContentLength,
    Other,
}

/// Classifies `name` (any case) with at most two comparisons: this runs for
/// every field of every request and response on the fast path, where the
/// lists it encodes (`HOP_BY_HOP`, `SET_BY_GATEWAY`) compared one by
/// one cost ~50 instructions a field (callgrind, issue 16).
/// `known_agrees_with_the_lists` pins it to them.
fn known(name: &[u8]) -> Known {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 if is(b"te") => Known::HopByHop,
        3 if is(b"via") => Known::Via,
        4 if is(b"host") => Known::Host,
        7 if is(b"upgrade") => Known::Upgrade,
        7 if is(b"trailer") => Known::HopByHop,
        10 if is(b"connection") || is(b"keep-alive") => Known::HopByHop,
        14 if is(b"content-length") => Known::ContentLength,
        15 if is(b"x-forwarded-for") => Known::Forwarded,
        16 if is(b"proxy-connection") => Known::HopByHop,
        16 if is(b"x-forwarded-host") => Known::Forwarded,
        17 if is(b"transfer-encoding") => Known::HopByHop,
        17 if is(b"x-forwarded-proto") => Known::Forwarded,
        18 if is(b"proxy-authenticate") => Known::HopByHop,
        19 if is(b"proxy-authorization") => Known::HopByHop,
        _ => Known::Other,
    }
}

/// Request fields the gateway writes itself: the client's values are
/// replaced (`Host`, `X-Forwarded-Proto`, `X-Forwarded-Host`) or joined into
/// ours (`X-Forwarded-For`, `Via`).
#[cfg(test)]
pub(crate) const SET_BY_GATEWAY: [&str; 5] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "via",
];

/// This hop's `Via` entry for a message of `version` (RFC 9110 §7.6.3).
pub(crate) const VIA: &str = "1.1 revgate";

/// Removes the fields [`field_fate`] drops (hop-by-hop, `Connection`-named);
/// keeps `Upgrade` + `Connection: upgrade` when `upgrade` is set. The
/// fields the gateway writes are its callers' to write.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, dir: Direction, upgrade: bool) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let connection_named = named.iter().any(|n| n == name.as_str());
            field_fate(name.as_str().as_bytes(), dir, connection_named, upgrade) == Fate::Drop
        })
        .cloned()
        .collect();
    for name in dropped {
        headers.remove(&name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
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
    let n = match ip {
        // By hand: `core::fmt` spent ~1,000 instructions on this, once per
        // connection (at most 15 bytes, so the indexing cannot go past 64).
        std::net::IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    buf[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    buf[n] = b'0' + o / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + o % 10;
                n += 1;
            }
            n
        }
        std::net::IpAddr::V6(_) => {
            use std::io::Write as _;
            let mut cur = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cur, "{ip}");
            cur.position() as usize
        }
    };
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
        _ => VIA,
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

/// The classifier's table, shared by the tests of both paths' renderers
/// (this file's `strip_hop_by_hop`, the fast path's head rewriting):
/// (field, direction, named by `Connection`, upgrade, fate).
#[cfg(test)]
pub(crate) const FIELD_TABLE: &[(&str, Direction, bool, bool, Fate)] = {
    use Direction::{Request as Rq, Response as Rs};
    use Fate::{Drop as D, Gateway as G, Keep as K};
    &[
        ("Connection", Rq, false, false, D),
        ("keep-alive", Rq, false, false, D),
        ("Proxy-Connection", Rs, false, false, D),
        ("proxy-authorization", Rq, false, false, D),
        ("proxy-authenticate", Rs, false, false, D),
        ("TE", Rq, false, false, D),
        ("trailer", Rs, false, false, D),
        ("transfer-encoding", Rq, false, false, D),
        ("transfer-encoding", Rs, false, false, D),
        ("upgrade", Rq, false, false, D),
        ("upgrade", Rq, true, true, K),
        ("upgrade", Rs, false, true, K),
        ("x-secret-hop", Rq, true, false, D),
        ("x-secret-hop", Rs, true, false, D),
        ("x-secret-hop", Rq, false, false, K),
        ("authorization", Rq, false, false, K),
        ("authorization", Rq, true, false, D),
        ("content-length", Rq, true, false, K),
        ("content-length", Rs, true, false, K),
        ("Host", Rq, false, false, G),
        ("host", Rq, true, false, G),
        ("host", Rs, true, false, K),
        ("x-forwarded-for", Rq, false, false, G),
        ("X-Forwarded-Proto", Rq, true, false, G),
        ("x-forwarded-host", Rq, false, false, G),
        ("x-forwarded-for", Rs, false, false, K),
        ("via", Rq, false, false, G),
        ("Via", Rs, false, false, G),
        ("set-cookie", Rs, false, false, K),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written IPv4 text is `Display`'s for every octet value in
    /// every position; IPv6 is `Display`'s own.
    #[test]
    fn ip_text_is_display() {
        let mut buf = [0u8; 64];
        for pos in 0..4 {
            for v in 0..=255u8 {
                let mut o = [1, 20, 103, 7];
                o[pos] = v;
                let ip = std::net::IpAddr::from(o);
                assert_eq!(ip_text(ip, &mut buf), ip.to_string());
            }
        }
        for t in ["::", "2001:db8::ff00:42:8329", "::ffff:192.0.2.1"] {
            let ip: std::net::IpAddr = t.parse().unwrap();
            assert_eq!(ip_text(ip, &mut buf), ip.to_string());
        }
    }

    /// The length-switched classifier says what the lists say, in any case,
    /// and nothing of names that are not in them (same-length neighbours
    /// included).
    #[test]
    fn known_agrees_with_the_lists() {
        let case = |n: &str| [n.to_ascii_lowercase(), n.to_ascii_uppercase()];
        for h in &HOP_BY_HOP {
            for n in case(h.as_str()) {
                assert_eq!(known(n.as_bytes()), Known::HopByHop, "{n}");
            }
        }
        for g in SET_BY_GATEWAY {
            let want = match g {
                "host" => Known::Host,
                "via" => Known::Via,
                _ => Known::Forwarded,
            };
            for n in case(g) {
                assert_eq!(known(n.as_bytes()), want, "{n}");
            }
        }
        assert_eq!(known(b"Upgrade"), Known::Upgrade);
        assert_eq!(known(b"CONTENT-LENGTH"), Known::ContentLength);
        for other in [
            "",
            "t",
            "tf",
            "vis",
            "hose",
            "upgrade2",
            "trailers",
            "connectio",
            "keep-alivf",
            "content-lengtx",
            "x-forwarded-fox",
            "proxy-connectiox",
            "x-forwarded-hosx",
            "transfer-encodinx",
            "x-forwarded-protx",
            "proxy-authenticatx",
            "proxy-authorizatiox",
            "authorization",
            "user-agent",
            "content-type",
        ] {
            assert_eq!(known(other.as_bytes()), Known::Other, "{other}");
        }
    }

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
        strip_hop_by_hop(&mut h, Direction::Request, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-keep"]);

        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, Direction::Request, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn the_classifier_follows_its_table() {
        for &(name, dir, named, upgrade, fate) in FIELD_TABLE {
            assert_eq!(
                field_fate(name.as_bytes(), dir, named, upgrade),
                fate,
                "{name} {dir:?} named={named} upgrade={upgrade}"
            );
        }
    }

    /// The hyper path's renderer drops exactly what the table drops (the
    /// `Gateway` fields are its callers' to write, so they survive here).
    #[test]
    fn the_hyper_path_renders_the_table() {
        for &(name, dir, named, upgrade, fate) in FIELD_TABLE {
            let mut h = HeaderMap::new();
            let key = HeaderName::from_bytes(name.as_bytes()).unwrap();
            h.insert(key.clone(), HeaderValue::from_static("v"));
            if named && key != header::CONNECTION {
                h.append(header::CONNECTION, HeaderValue::from_str(name).unwrap());
            }
            strip_hop_by_hop(&mut h, dir, upgrade);
            assert_eq!(
                h.contains_key(&key),
                fate != Fate::Drop,
                "{name} named={named} upgrade={upgrade}"
            );
        }
    }
}
