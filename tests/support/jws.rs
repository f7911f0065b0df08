//! Real signed JWTs for tests (ring: ES256, ES384, RS256), and the spellings
//! of the same token that lenient verifiers accept: padded or bit-flipped
//! signatures, and ECDSA's other valid signature `(r, n - s)`.
#![allow(dead_code)]

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The group orders of P-256 and P-384 (big-endian).
const N_P256: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
const N_P384: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973";

/// A signing key of one algorithm.
pub enum Signer {
    Ecdsa {
        alg: &'static str,
        key: signature::EcdsaKeyPair,
        verify: &'static signature::EcdsaVerificationAlgorithm,
        order: &'static str,
    },
    Rsa(signature::RsaKeyPair),
}

impl Signer {
    pub fn es256() -> Self {
        Self::ecdsa(
            "ES256",
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &signature::ECDSA_P256_SHA256_FIXED,
            N_P256,
        )
    }

    pub fn es384() -> Self {
        Self::ecdsa(
            "ES384",
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &signature::ECDSA_P384_SHA384_FIXED,
            N_P384,
        )
    }

    fn ecdsa(
        alg: &'static str,
        signing: &'static signature::EcdsaSigningAlgorithm,
        verify: &'static signature::EcdsaVerificationAlgorithm,
        order: &'static str,
    ) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
        let key = signature::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).unwrap();
        Signer::Ecdsa {
            alg,
            key,
            verify,
            order,
        }
    }

    /// RS256 with the committed test-only key.
    pub fn rs256() -> Self {
        let pem = include_str!("../fixtures/rsa2048-test-only.pem");
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        Signer::Rsa(signature::RsaKeyPair::from_pkcs8(&der).unwrap())
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Signer::Ecdsa { alg, .. } => alg,
            Signer::Rsa(_) => "RS256",
        }
    }

    /// A compact JWS over these claims.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": self.alg(), "typ": "JWT", "kid": "k1"});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            Signer::Ecdsa { key, .. } => {
                key.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec()
            }
            Signer::Rsa(key) => {
                let mut out = vec![0; key.public().modulus_len()];
                key.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut out,
                )
                .unwrap();
                out
            }
        };
        format!("{input}.{}", B64.encode(sig))
    }

    /// Whether `token`'s signature verifies (padding and unused bits
    /// ignored, as lenient verifiers do).
    pub fn verifies(&self, token: &str) -> bool {
        let (input, sig) = token.rsplit_once('.').unwrap();
        let Some(sig) = lenient_decode(sig) else {
            return false;
        };
        match self {
            Signer::Ecdsa { key, verify, .. } => {
                signature::UnparsedPublicKey::new(*verify, key.public_key().as_ref())
                    .verify(input.as_bytes(), &sig)
                    .is_ok()
            }
            Signer::Rsa(key) => signature::UnparsedPublicKey::new(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                key.public().as_ref(),
            )
            .verify(input.as_bytes(), &sig)
            .is_ok(),
        }
    }

    /// The same token with the ECDSA signature `(r, s)` replaced by
    /// `(r, n - s)`: another valid signature over the same content.
    pub fn malleate(&self, token: &str) -> Option<String> {
        let Signer::Ecdsa { order, .. } = self else {
            return None;
        };
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut sig = B64.decode(sig).unwrap();
        let half = sig.len() / 2;
        let n = hex::decode(order).unwrap();
        let s = sig[half..].to_vec();
        // n - s, big-endian, with borrow.
        let mut borrow = 0i16;
        for i in (0..half).rev() {
            let mut d = n[i] as i16 - s[i] as i16 - borrow;
            borrow = if d < 0 {
                d += 256;
                1
            } else {
                0
            };
            sig[half + i] = d as u8;
        }
        Some(format!("{input}.{}", B64.encode(sig)))
    }
}

fn lenient_decode(s: &str) -> Option<Vec<u8>> {
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(s).ok()
}

/// Spellings of `token`'s signature that decode to the same bytes: `=`
/// padding appended, and the unused low bits of the last character set.
pub fn respellings(token: &str) -> Vec<String> {
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut out = Vec::new();
    let pad = (4 - sig.len() % 4) % 4;
    if pad > 0 {
        out.push(format!("{input}.{sig}{}", "=".repeat(pad)));
    }
    let unused_bits = match sig.len() % 4 {
        2 => 4,
        3 => 2,
        _ => 0,
    };
    if unused_bits > 0 {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = *sig.as_bytes().last().unwrap();
        let v = ALPHABET.iter().position(|&c| c == last).unwrap();
        let flipped = ALPHABET[v ^ 1];
        if flipped != last {
            let mut s = sig.to_string();
            s.pop();
            s.push(flipped as char);
            out.push(format!("{input}.{s}"));
        }
    }
    out
}
