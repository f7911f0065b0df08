//! The Shared Signals receiver: SETs pushed to `[feeds.ssf] path` (RFC
//! 8935) or polled ([`super::poll`], RFC 8936), each verified (`set.rs`)
//! and its events applied.
//!
//! # Events
//!
//! | event type | effect |
//! |---|---|
//! | CAEP `session-revoked`, `credential-change`; RISC `account-disabled`, `account-purged`, `credential-compromise`, `sessions-revoked` | scope revoke of the subject at the event time |
//! | SSF `verification` | none (counted `verification`) |
//! | any other (e.g. CAEP `token-claims-change`) | accepted, ignored, counted `ignored` |
//!
//! The event time is the event's `event_timestamp`, else the SET's `iat`
//! (never later than now). A complex subject's `session` is handed to
//! `feeds::session_revocation` as a `sid`; `session-revoked` still revokes
//! the subject's credentials when the subject names a user (the session's
//! own tokens cannot be told apart until families exist: fail closed).
//!
//! # Subjects (RFC 9493)
//!
//! Read from the event's `subject` member (CAEP/RISC), else the SET's
//! `sub_id` (SSF 1.0). `format` (or the older `subject_type`) picks the
//! mapping of `[feeds.ssf.subjects]`: `iss_sub` (its `iss` must be the
//! feed's issuer or one of `iss_sub_issuers`) -> its `sub`; `email`,
//! `opaque` (`id`), `phone_number` -> their value, each only when mapped to
//! `sub`; `complex` -> its `user` member mapped so, its `tenant` the rule's
//! `org` when `tenant_org`; `aliases` -> the first identifier that maps. An
//! event whose subject maps to nothing revokes nothing (`unmapped`).
//!
//! # Push answers (RFC 8935 §2.2-2.4)
//!
//! | what | answer |
//! |---|---|
//! | accepted (applied, ignored, or a SET applied before) | `202`, empty |
//! | `authorization_header` set and not sent exactly | `400 {"err":"authentication_failed",...}` |
//! | not `application/secevent+jwt`, malformed, claims wrong | `400 {"err":"invalid_request",...}` |
//! | signature, key, `alg` | `400 {"err":"invalid_key",...}` |
//! | `iss` / `aud` | `400 {"err":"invalid_issuer"}` / `{"err":"invalid_audience"}` |
//! | not `POST` / over `revoke.max_body_bytes` | `405` / `413` `{"err":"invalid_request",...}` |
//! | rate limited | `429 {"err":"too_many_requests",...}`, `Retry-After` |
//! | keys not loaded, store failed | `503 {"err":"temporarily_unavailable",...}`, `Retry-After: 1` |
//!
//! A SET delivered again (same `iss` and `jti`, already applied) is
//! answered `202`: the transmitter retries a push whose answer it lost, and
//! must hear success; nothing is applied or counted again.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::set::{self, Rejection, Verified};
use super::{Applied, Delivery, Effect, FeedKind, SsfFeed};
use crate::config::{SsfSubjectsConfig, SubjectTarget};
use crate::proxy::{Body, Gateway, Runtime};
use crate::store::ScopeKey;

const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";
/// The SSF stream verification event.
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";

/// The short name of an event type that revokes, if it is one.
pub fn revoking_event(uri: &str) -> Option<&'static str> {
    if let Some(e) = uri.strip_prefix(CAEP) {
        return match e {
            "session-revoked" => Some("session-revoked"),
            "credential-change" => Some("credential-change"),
            _ => None,
        };
    }
    match uri.strip_prefix(RISC)? {
        "account-disabled" => Some("account-disabled"),
        "account-purged" => Some("account-purged"),
        "credential-compromise" => Some("credential-compromise"),
        "sessions-revoked" => Some("sessions-revoked"),
        _ => None,
    }
}

pub(super) async fn push(
    gw: &Gateway,
    rt: &Runtime,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response<Body>, Rejection> {
    let Some(feed) = rt.feeds.ssf.as_ref() else {
        return Err(Rejection::Unavailable("feed not configured"));
    };
    if let Some(want) = &feed.settings.authorization {
        use subtle::ConstantTimeEq as _;
        let given = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let want = want.as_bytes();
        if given.len() != want.len() || !bool::from(given.ct_eq(want)) {
            return Err(Rejection::AuthenticationFailed);
        }
    }
    if !super::media_type_is(headers, "application/secevent+jwt") {
        return Err(Rejection::InvalidRequest(
            "content type must be application/secevent+jwt",
        ));
    }
    let token = std::str::from_utf8(body)
        .map_err(|_| Rejection::InvalidRequest("not a JWS compact token"))?
        .trim();
    process(gw, rt, feed, token, Delivery::Push).await?;
    let mut resp = Response::new(crate::proxy::full(Bytes::new()));
    *resp.status_mut() = StatusCode::ACCEPTED;
    Ok(resp)
}

/// Verifies one SET and applies its events (push and poll alike); the
/// verified `jti` with the outcome.
pub(crate) async fn process(
    gw: &Gateway,
    rt: &Runtime,
    feed: &SsfFeed,
    token: &str,
    delivery: Delivery,
) -> Result<(String, Applied), Rejection> {
    let verified = set::verify(&feed.feed.verifier, token).await?;
    let issuer = feed
        .feed
        .settings
        .verify
        .policy
        .issuers
        .first()
        .map(String::as_str)
        .unwrap_or_default();
    let effects = effects(&verified, &feed.settings.subjects, issuer)?;
    let leeway = feed.feed.settings.verify.policy.leeway;
    let applied = super::apply(gw, rt, FeedKind::Ssf, delivery, &verified, effects, leeway).await?;
    Ok((verified.jti, applied))
}

/// What a SET's events ask for.
pub(crate) fn effects(
    t: &Verified,
    cfg: &SsfSubjectsConfig,
    issuer: &str,
) -> Result<Vec<Effect>, Rejection> {
    let mut out = Vec::new();
    for (uri, payload) in t.events() {
        if uri == VERIFICATION {
            out.push(Effect::Verification);
            continue;
        }
        let Some(event) = revoking_event(uri) else {
            out.push(Effect::Ignored);
            continue;
        };
        let Value::Object(payload) = payload else {
            return Err(Rejection::InvalidRequest(
                "an event's payload must be an object",
            ));
        };
        let at = match payload.get("event_timestamp") {
            None => t.iat,
            Some(v) => match v.as_f64() {
                Some(ts) if ts >= 0.0 => ts as u64,
                _ => return Err(Rejection::InvalidRequest("event_timestamp malformed")),
            },
        };
        let subject = payload.get("subject").or_else(|| t.claims.get("sub_id"));
        let mapped = match subject {
            Some(Value::Object(s)) => map_subject(s, cfg, issuer, 0)?,
            Some(_) => return Err(Rejection::InvalidRequest("a subject must be an object")),
            None => {
                return Err(Rejection::InvalidRequest(
                    "event has no subject (nor sub_id)",
                ))
            }
        };
        let mut any = false;
        if let Some(sub) = mapped.sub {
            out.push(Effect::Revoke {
                event,
                key: ScopeKey {
                    sub,
                    org: mapped.org,
                    provider: None,
                },
                at,
            });
            any = true;
        }
        if let Some(sid) = mapped.session {
            out.push(Effect::Session { event, sid, at });
            any = true;
        }
        if !any {
            out.push(Effect::Unmapped);
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Mapped {
    sub: Option<String>,
    org: Option<String>,
    session: Option<String>,
}

fn member(s: &Map<String, Value>, name: &str) -> Result<Option<String>, Rejection> {
    match s.get(name) {
        None => Ok(None),
        Some(v) => match set::text(v) {
            Some(t) if t.len() <= crate::dialect::MAX_ID_LEN => Ok(Some(t)),
            Some(_) => Err(Rejection::InvalidRequest(
                "a subject identifier longer than 256 bytes",
            )),
            None => Err(Rejection::InvalidRequest(
                "a subject identifier is malformed",
            )),
        },
    }
}

/// One subject identifier (RFC 9493) -> attributes; `depth` bounds nesting.
fn map_subject(
    s: &Map<String, Value>,
    cfg: &SsfSubjectsConfig,
    issuer: &str,
    depth: u8,
) -> Result<Mapped, Rejection> {
    if depth > 2 {
        return Err(Rejection::InvalidRequest("subject nested too deeply"));
    }
    let format = s
        .get("format")
        .or_else(|| s.get("subject_type"))
        .and_then(Value::as_str)
        .ok_or(Rejection::InvalidRequest("a subject has no format"))?;
    let to_sub = |target: SubjectTarget, v: Option<String>| match target {
        SubjectTarget::Sub => v,
        SubjectTarget::Ignore => None,
    };
    let mut m = Mapped::default();
    match format {
        "iss_sub" => {
            let iss = member(s, "iss")?;
            let accepted = iss.as_deref().is_some_and(|i| {
                if cfg.iss_sub_issuers.is_empty() {
                    i == issuer
                } else {
                    cfg.iss_sub_issuers.iter().any(|a| a == i)
                }
            });
            if accepted {
                m.sub = to_sub(cfg.iss_sub, member(s, "sub")?);
            }
        }
        "email" => m.sub = to_sub(cfg.email, member(s, "email")?),
        "opaque" => m.sub = to_sub(cfg.opaque, member(s, "id")?),
        "phone_number" => m.sub = to_sub(cfg.phone_number, member(s, "phone_number")?),
        "complex" => {
            if let Some(Value::Object(user)) = s.get("user") {
                m.sub = map_subject(user, cfg, issuer, depth + 1)?.sub;
            }
            if let Some(Value::Object(session)) = s.get("session") {
                m.session = member(session, "id")?.or(member(session, "sid")?);
            }
            if cfg.tenant_org {
                if let Some(Value::Object(tenant)) = s.get("tenant") {
                    m.org = member(tenant, "id")?.or(member(tenant, "sub")?);
                }
            }
        }
        "aliases" => {
            if let Some(Value::Array(ids)) = s.get("identifiers") {
                for id in ids.iter().take(16) {
                    if let Value::Object(id) = id {
                        let sub = map_subject(id, cfg, issuer, depth + 1)?.sub;
                        if sub.is_some() {
                            m.sub = sub;
                            break;
                        }
                    }
                }
            }
        }
        _ => {}
    }
    Ok(m)
}

/// The answer to a refused push (see the module doc).
pub(crate) fn reject(r: Rejection) -> Response<Body> {
    let err = match r {
        Rejection::InvalidKey(_) => "invalid_key",
        Rejection::InvalidIssuer => "invalid_issuer",
        Rejection::InvalidAudience => "invalid_audience",
        Rejection::AuthenticationFailed => "authentication_failed",
        Rejection::Unavailable(_) => "temporarily_unavailable",
        _ => "invalid_request",
    };
    super::finish(super::json(
        super::status(&r),
        &json!({"err": err, "description": r.description()}),
    ))
}

/// The RFC 8936 `setErrs` member for a SET the poller refuses.
pub(crate) fn set_error(r: &Rejection) -> Value {
    let err = match r {
        Rejection::InvalidKey(_) => "invalid_key",
        Rejection::InvalidIssuer => "invalid_issuer",
        Rejection::InvalidAudience => "invalid_audience",
        _ => "invalid_request",
    };
    json!({"err": err, "description": r.description()})
}

pub(super) fn too_many_requests() -> Response<Body> {
    super::json(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"err": "too_many_requests", "description": "too many requests; retry later"}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(events: Value, extra: Value) -> Verified {
        let mut claims = json!({"iss": "https://i/", "iat": 1000, "jti": "j", "events": events});
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        Verified {
            claims: claims.as_object().unwrap().clone(),
            iss: "https://i/".into(),
            jti: "j".into(),
            iat: 1000,
            exp: None,
        }
    }

    fn revoked(effects: &[Effect]) -> Vec<(String, Option<String>, u64)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Revoke { key, at, .. } => Some((key.sub.clone(), key.org.clone(), *at)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn subjects_map_by_format_and_configuration() {
        let cfg = SsfSubjectsConfig::default();
        let ev = |subject: Value| json!({format!("{RISC}account-disabled"): {"subject": subject, "event_timestamp": 900}});
        let run = |events: Value, cfg: &SsfSubjectsConfig| {
            effects(&set(events, json!({})), cfg, "https://i/").unwrap()
        };
        // iss_sub of the feed's issuer: its sub, at the event's time.
        let e = run(
            ev(json!({"format": "iss_sub", "iss": "https://i/", "sub": "u1"})),
            &cfg,
        );
        assert_eq!(revoked(&e), vec![("u1".into(), None, 900)]);
        // Of another issuer: not mapped.
        let e = run(
            ev(json!({"format": "iss_sub", "iss": "https://other/", "sub": "u1"})),
            &cfg,
        );
        assert_eq!(e, vec![Effect::Unmapped]);
        // Email: ignored by default, the sub when configured so.
        let email = ev(json!({"format": "email", "email": "a@b.c"}));
        assert_eq!(run(email.clone(), &cfg), vec![Effect::Unmapped]);
        let by_email = SsfSubjectsConfig {
            email: SubjectTarget::Sub,
            ..cfg.clone()
        };
        assert_eq!(
            revoked(&run(email, &by_email)),
            vec![("a@b.c".into(), None, 900)]
        );
        // Complex: user, session (a sid), tenant as org when asked.
        let complex = ev(json!({"format": "complex",
            "user": {"format": "iss_sub", "iss": "https://i/", "sub": "u2"},
            "session": {"format": "opaque", "id": "s-9"},
            "tenant": {"format": "opaque", "id": "t-1"}}));
        let e = run(complex.clone(), &cfg);
        assert_eq!(revoked(&e), vec![("u2".into(), None, 900)]);
        assert!(e
            .iter()
            .any(|x| matches!(x, Effect::Session { sid, .. } if sid == "s-9")));
        let tenants = SsfSubjectsConfig {
            tenant_org: true,
            ..cfg.clone()
        };
        assert_eq!(
            revoked(&run(complex, &tenants)),
            vec![("u2".into(), Some("t-1".into()), 900)]
        );
        // Aliases: the first that maps.
        let aliases = ev(json!({"format": "aliases", "identifiers": [
            {"format": "email", "email": "a@b.c"},
            {"format": "iss_sub", "iss": "https://i/", "sub": "u3"}]}));
        assert_eq!(revoked(&run(aliases, &cfg)), vec![("u3".into(), None, 900)]);
        // SSF 1.0's top-level sub_id, the SET's iat without event_timestamp.
        let e = effects(
            &set(
                json!({format!("{CAEP}credential-change"): {}}),
                json!({"sub_id": {"format": "iss_sub", "iss": "https://i/", "sub": "u4"}}),
            ),
            &cfg,
            "https://i/",
        )
        .unwrap();
        assert_eq!(revoked(&e), vec![("u4".into(), None, 1000)]);
        // Malformed: refused whole.
        for bad in [
            json!("u1"),
            json!({"sub": "u1"}),
            json!({"format": "opaque", "id": ["x"]}),
        ] {
            assert!(
                effects(&set(ev(bad.clone()), json!({})), &cfg, "https://i/").is_err(),
                "{bad}"
            );
        }
    }
}
