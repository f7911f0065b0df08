//! What verifying a revoker's JWT costs: the work a terminate-mode LangSmith
//! or Codegen revoke call adds (issue 9, item 4). Not on the proxy's hot path:
//! ordinary requests are judged on peeked claims and never verified.
//!
//! - `verify/<alg>`: the whole verification of one caller token against a
//!   loaded key set holding all four keys (header checks, key choice by
//!   `kid`, signature, `iss`/`aud`/`exp`/`nbf`/`iat`), for RS256 (2048-bit
//!   key), PS256 (same key), ES256 (P-256) and EdDSA (Ed25519).
//! - `header`: the header checks alone (shape, `alg`, `crit`, `kid`), the
//!   part every refused token pays before any key is looked at.
//! - `keyset_parse`: parsing a four-key JWKS document (what a refetch costs
//!   besides the network).
//!
//! Run: `cargo bench --bench verify -- --warm-up-time 1 --measurement-time 3`;
//! `python3 benches/medians.py` prints the medians criterion recorded.

use std::hint::black_box;
use std::time::Duration;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use revgate::identity::verify::{header, KeySet, Policy};
use ring::signature::KeyPair as _;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

struct Key {
    kid: &'static str,
    alg: Algorithm,
    enc: EncodingKey,
    jwk: serde_json::Value,
}

fn keys() -> Vec<Key> {
    let pem = include_str!("../tests/data/jwt_rsa_a.pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let pair = ring::signature::RsaKeyPair::from_der(&der).unwrap();
    let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
    let rsa_jwk = |kid: &str, alg: &str| serde_json::json!({"kty":"RSA","kid":kid,"alg":alg,"use":"sig","n":b64(&public.n),"e":b64(&public.e)});
    let rng = ring::rand::SystemRandom::new();
    let ec_alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let ec8 = ring::signature::EcdsaKeyPair::generate_pkcs8(ec_alg, &rng).unwrap();
    let ec = ring::signature::EcdsaKeyPair::from_pkcs8(ec_alg, ec8.as_ref(), &rng).unwrap();
    let p = ec.public_key().as_ref();
    let ed8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed = ring::signature::Ed25519KeyPair::from_pkcs8(ed8.as_ref()).unwrap();
    vec![
        Key {
            kid: "rs",
            alg: Algorithm::RS256,
            enc: EncodingKey::from_rsa_der(&der),
            jwk: rsa_jwk("rs", "RS256"),
        },
        Key {
            kid: "ps",
            alg: Algorithm::PS256,
            enc: EncodingKey::from_rsa_der(&der),
            jwk: rsa_jwk("ps", "PS256"),
        },
        Key {
            kid: "es",
            alg: Algorithm::ES256,
            enc: EncodingKey::from_ec_der(ec8.as_ref()),
            jwk: serde_json::json!({"kty":"EC","crv":"P-256","kid":"es","use":"sig","x":b64(&p[1..33]),"y":b64(&p[33..])}),
        },
        Key {
            kid: "ed",
            alg: Algorithm::EdDSA,
            enc: EncodingKey::from_ed_der(ed8.as_ref()),
            jwk: serde_json::json!({"kty":"OKP","crv":"Ed25519","kid":"ed","use":"sig","x":b64(ed.public_key().as_ref())}),
        },
    ]
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let doc = serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
        .to_string();
    let set = KeySet::parse(doc.as_bytes()).unwrap();
    let policy = Policy {
        issuers: vec!["https://idp.example/".into()],
        audiences: vec!["api".into()],
        leeway: Duration::from_secs(60),
        require_exp: true,
    };
    let now = revgate::store::now_unix();
    // Far from expiry for the whole run.
    let claims = serde_json::json!({
        "sub": "user-1234", "iss": "https://idp.example/", "aud": "api",
        "iat": now - 5, "exp": now + 86_400, "provider": "github", "org_id": 7,
    });
    let mut g = c.benchmark_group("verify");
    for k in &keys {
        let mut h = Header::new(k.alg);
        h.kid = Some(k.kid.into());
        let token = jsonwebtoken::encode(&h, &claims, &k.enc).unwrap();
        let name = format!("{:?}", k.alg);
        g.bench_function(name, |b| {
            b.iter(|| {
                let h = header(black_box(&token)).unwrap();
                black_box(set.verify(&token, &h, &policy, now).unwrap())
            })
        });
    }
    g.finish();
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("es".into());
    let token = jsonwebtoken::encode(&h, &claims, &keys[2].enc).unwrap();
    c.bench_function("header", |b| b.iter(|| header(black_box(&token)).unwrap()));
    c.bench_function("keyset_parse", |b| {
        b.iter(|| KeySet::parse(black_box(doc.as_bytes())).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
