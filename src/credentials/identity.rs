//! Token identity: what names a token ([`token_identity`]). A JWS is named
//! by its signing input, anything else by its bytes.

use base64::Engine as _;

/// Base64url as verifiers read it: padding optional, unused trailing bits
/// ignored (the same bytes however they were spelled).
pub(super) const LENIENT_B64URL: base64::engine::GeneralPurpose =
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );

/// What names a token (ARCHITECTURE.md, "Token identity").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenIdentity<'a> {
    /// A JWS compact serialization, named by its signing input (`header.payload`
    /// as sent): every spelling of its signature (padding, unused low bits)
    /// and every other valid signature over the same content (ECDSA's
    /// `(r, n - s)`) is the same token.
    Jws(&'a str),
    /// Anything else, named by its bytes.
    Opaque(&'a str),
}

/// How a token is named. A token is a JWS when it has exactly three
/// `.`-separated segments, a non-empty payload, and a header that decodes
/// (leniently) to something braced like a JSON object; the check is meant to
/// be inclusive, since a JWS taken for opaque would let a re-encoded
/// signature pass.
pub fn token_identity(token: &str) -> TokenIdentity<'_> {
    match jws_parts(token) {
        Some((header, payload)) => TokenIdentity::Jws(&token[..header.len() + 1 + payload.len()]),
        None => TokenIdentity::Opaque(token),
    }
}

/// `(header, payload)` of a JWS compact token (see [`token_identity`]).
pub(super) fn jws_parts(token: &str) -> Option<(&str, &str)> {
    // `memchr` scans a whole vector register at a time: a JWT's signature
    // alone is hundreds of bytes, and every request's token is scanned.
    let bytes = token.as_bytes();
    let mut dots = memchr::memchr_iter(b'.', bytes);
    let (first, second) = (dots.next()?, dots.next()?);
    if dots.next().is_some() || first == 0 || second == first + 1 {
        return None;
    }
    let (header, payload) = (token.get(..first)?, token.get(first + 1..second)?);
    header_is_object(header).then_some((header, payload))
}

/// Whether a JWS header segment decodes (leniently) to something braced
/// like a JSON object.
fn header_is_object(header: &str) -> bool {
    // Decoded in place on the stack for any usual header; a longer one
    // (unusual, but an issuer's choice) on the heap.
    let mut stack = [0u8; 384];
    let heap;
    let decoded: &[u8] = if header.len() <= 512 {
        let Ok(n) = LENIENT_B64URL.decode_slice(header.as_bytes(), &mut stack) else {
            return false;
        };
        &stack[..n]
    } else {
        let Ok(bytes) = LENIENT_B64URL.decode(header.as_bytes()) else {
            return false;
        };
        heap = bytes;
        &heap
    };
    // A JSON object's braces, without parsing it: cheaper, and more
    // inclusive (the error to avoid is a JWS taken for opaque).
    let json = decoded.trim_ascii();
    json.first() == Some(&b'{') && json.last() == Some(&b'}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::FingerprintKey;

    #[test]
    fn a_jws_is_named_by_its_signing_input_and_the_rest_by_bytes() {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let h = e(r#"{"alg":"ES256"}"#);
        let p = e(r#"{"sub":"u"}"#);
        let jws = format!("{h}.{p}.c2lnbmF0dXJl");
        assert_eq!(
            token_identity(&jws),
            TokenIdentity::Jws(&jws[..h.len() + 1 + p.len()])
        );
        let key = FingerprintKey::from_bytes([1; 32]);
        for other_sig in ["c2lnbmF0dXJl==", "c2lnbmF0dXJm", "", "AAAA"] {
            let t = format!("{h}.{p}.{other_sig}");
            assert_eq!(
                key.token_fingerprint(&t),
                key.token_fingerprint(&jws),
                "{t}"
            );
        }
        // Padded header, header with spaces around the object, a long header.
        let padded = format!("{}=.{p}.x", e(r#"{"alg":"RS256"}  "#));
        assert!(matches!(token_identity(&padded), TokenIdentity::Jws(_)));
        let long = format!(
            "{}.{p}.x",
            e(&format!(r#"{{"alg":"RS256","x5c":"{}"}}"#, "a".repeat(900)))
        );
        assert!(matches!(token_identity(&long), TokenIdentity::Jws(_)));
        // Not a JWS: named by every byte.
        for t in [
            "opaque".to_string(),
            "a.b.c".to_string(),
            format!("{}.{p}.x", e("[1]")),
            format!("{h}..x"),
            format!(".{p}.x"),
            format!("{h}.{p}.x.y"),
            format!("{h}.{p}"),
        ] {
            assert_eq!(token_identity(&t), TokenIdentity::Opaque(&t), "{t}");
            assert_eq!(key.token_fingerprint(&t), key.fingerprint(t.as_bytes()));
        }
        // The two kinds never share a name: an opaque token equal to a
        // JWS's signing input is another token.
        let signing_input = format!("{h}.{p}");
        assert_ne!(
            key.token_fingerprint(&signing_input),
            key.token_fingerprint(&jws)
        );
        // jti names are apart from both, and per issuer.
        assert_ne!(
            key.jti_fingerprint(None, "j"),
            key.jti_fingerprint(Some(""), "j")
        );
        assert_ne!(
            key.jti_fingerprint(Some("a"), "bj"),
            key.jti_fingerprint(Some("ab"), "j")
        );
    }

    /// `jws_parts` finds the dots with `memchr`; the rule it implements is
    /// "exactly three `.`-separated segments, header and payload non-empty"
    /// (the reference here: the `split` it replaced).
    #[test]
    fn jws_segments_agree_with_their_definition() {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let h = e(r#"{"alg":"RS256"}"#);
        let pieces = [h.as_str(), "", "eyJzdWIiOiJ1In0", "sig", "."];
        let reference = |t: &str| {
            let segs: Vec<&str> = t.split('.').collect();
            segs.len() == 3
                && !segs[0].is_empty()
                && !segs[1].is_empty()
                && header_is_object(segs[0])
        };
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    for d in pieces {
                        let t = format!("{a}.{b}{c}{d}");
                        assert_eq!(jws_parts(&t).is_some(), reference(&t), "{t}");
                        let t = format!("{a}{b}.{c}.{d}");
                        assert_eq!(jws_parts(&t).is_some(), reference(&t), "{t}");
                    }
                }
            }
        }
    }
}
