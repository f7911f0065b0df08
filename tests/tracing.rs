//! Request ids and OpenTelemetry traces against the real binary, on both
//! connection paths: a real OTLP/HTTP receiver (written here: a hyper
//! server decoding the protobuf export requests) collects the gateway's
//! spans; the upstream's recorded headers show what was propagated; the
//! access log shows the request id.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use support::*;

/// An OTLP/HTTP traces receiver on 127.0.0.1:0: every span of every export
/// request it is sent, and the `service.name` they came with.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Receiver {
    async fn spawn() -> (Receiver, String) {
        let r = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let spans = r.spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let spans = spans.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let spans = spans.clone();
                            async move {
                                let ok = req.uri().path() == "/v1/traces"
                                    && req.headers()["content-type"] == "application/x-protobuf";
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let status = match ExportTraceServiceRequest::decode(body) {
                                    Ok(export) if ok => {
                                        for rs in export.resource_spans {
                                            let service = rs
                                                .resource
                                                .iter()
                                                .flat_map(|r| &r.attributes)
                                                .find(|a| a.key == "service.name")
                                                .and_then(|a| a.value.as_ref()?.value.clone())
                                                .map(|v| match v {
                                                    AnyValue::StringValue(s) => s,
                                                    other => format!("{other:?}"),
                                                })
                                                .unwrap_or_default();
                                            for ss in rs.scope_spans {
                                                for s in ss.spans {
                                                    spans
                                                        .lock()
                                                        .unwrap()
                                                        .push((service.clone(), s));
                                                }
                                            }
                                        }
                                        200
                                    }
                                    _ => 400,
                                };
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/x-protobuf")
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (r, url)
    }

    /// The span whose `revgate.request_id` is `id`, once it has arrived.
    async fn span_of(&self, id: &str) -> (String, Span) {
        let mut found = None;
        wait_for(
            &format!("the span of request {id}"),
            Duration::from_secs(20),
            async || {
                found = self
                    .spans
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(_, s)| attr(s, "revgate.request_id").as_deref() == Some(id))
                    .cloned();
                found.is_some()
            },
        )
        .await;
        found.unwrap()
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let v = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?
        .value
        .clone()?;
    Some(match v {
        AnyValue::StringValue(s) => s,
        AnyValue::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

async fn get_with(url: &str, token: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = get(url).header("authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(Full::default()).unwrap()).await
}

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_and_the_trace_context_reaches_the_upstream() {
    let (receiver, endpoint) = Receiver::spawn().await;
    for (name, path) in PATHS {
        let up = Upstream::new().spawn().await;
        let gw = Gateway::new()
            .upstream(&up.url)
            .toml(path)
            .toml(&format!(
                "[tracing]\notlp_endpoint = {endpoint:?}\nservice_name = \"edge-{}\"\nexport_interval = \"100ms\"\n",
                name.replace(' ', "-")
            ))
            .spawn();
        let rid = format!("rid-{}", name.replace(' ', "-"));

        // Forwarded: a child of the caller's trace, and the upstream gets
        // a traceparent naming the gateway's span, and the caller's id.
        let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
        let r = get_with(
            &format!("{}/data?q=never-in-a-span", gw.url),
            "tok-traced",
            &[
                ("traceparent", &parent),
                ("tracestate", "vendor=1"),
                ("x-request-id", &rid),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let seen = up.last().unwrap();
        let sent: Vec<&str> = seen
            .headers
            .get_all("traceparent")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(sent.len(), 1, "{name}: {sent:?}");
        let parts: Vec<&str> = sent[0].split('-').collect();
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", PARENT_TRACE, "01"),
            "{name}"
        );
        assert_ne!(
            parts[2], PARENT_SPAN,
            "{name}: the gateway's own span is the parent"
        );
        assert_eq!(seen.headers["tracestate"], "vendor=1", "{name}");
        let ids: Vec<_> = seen.headers.get_all("x-request-id").iter().collect();
        assert_eq!(ids, [rid.as_str()], "{name}");

        let (service, span) = receiver.span_of(&rid).await;
        assert_eq!(service, format!("edge-{}", name.replace(' ', "-")));
        assert_eq!(hex::encode(&span.trace_id), PARENT_TRACE, "{name}");
        assert_eq!(hex::encode(&span.parent_span_id), PARENT_SPAN, "{name}");
        assert_eq!(hex::encode(&span.span_id), parts[2], "{name}");
        assert_eq!(span.name, "GET");
        assert_eq!(span.kind, 2, "{name}: SPAN_KIND_SERVER");
        assert_eq!(attr(&span, "revgate.verdict").as_deref(), Some("forwarded"));
        assert_eq!(
            attr(&span, "http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(attr(&span, "http.route").as_deref(), Some("default"));
        assert_eq!(
            attr(&span, "url.path").as_deref(),
            Some("/data"),
            "no query"
        );
        let dump = format!("{span:?}");
        assert!(
            !dump.contains("never-in-a-span") && !dump.contains("tok-traced"),
            "{dump}"
        );

        // Revoked: the span says so, and nothing reached the upstream.
        admin_revoke(&gw, "tok-revoked").await;
        let hits = up.hits();
        let rid2 = format!("{rid}-revoked");
        let r = get_with(
            &format!("{}/data", gw.url),
            "tok-revoked",
            &[("x-request-id", &rid2)],
        )
        .await;
        assert_revoked_response(&r);
        assert_eq!(up.hits(), hits);
        let (_, span) = receiver.span_of(&rid2).await;
        assert_eq!(attr(&span, "revgate.verdict").as_deref(), Some("revoked"));
        assert_eq!(
            attr(&span, "http.response.status_code").as_deref(),
            Some("401")
        );
        // No caller trace: a root span of a new trace.
        assert!(span.parent_span_id.is_empty(), "{name}");
        assert_ne!(hex::encode(&span.trace_id), PARENT_TRACE);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_or_made_sent_upstream_and_logged() {
    for (name, path) in PATHS {
        let up = Upstream::new().spawn().await;
        let gw = Gateway::new()
            .upstream(&up.url)
            .toml(path)
            .toml("[log]\nformat = \"json\"\n")
            .spawn();
        // Kept.
        let r = get_with(
            &format!("{}/data", gw.url),
            "tok-a",
            &[("x-request-id", "abc-123")],
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            up.last().unwrap().headers["x-request-id"],
            "abc-123",
            "{name}"
        );
        // Made: absent, or unfit (a space, too long), or two of them.
        let long = "x".repeat(65);
        for given in [
            vec![],
            vec!["has space"],
            vec![long.as_str()],
            vec!["a", "b"],
        ] {
            let headers: Vec<(&str, &str)> = given.iter().map(|v| ("x-request-id", *v)).collect();
            let r = get_with(&format!("{}/data", gw.url), "tok-a", &headers).await;
            assert_eq!(r.status, 200);
            let seen = up.last().unwrap();
            let ids: Vec<_> = seen.headers.get_all("x-request-id").iter().collect();
            assert_eq!(ids.len(), 1, "{name} {given:?}");
            let id = ids[0].to_str().unwrap();
            assert_eq!(id.len(), 32, "{name} {given:?}: {id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let made = up.last().unwrap().headers["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        // A refusal has one too, in its access line.
        admin_revoke(&gw, "tok-r").await;
        let r = get_with(
            &format!("{}/data", gw.url),
            "tok-r",
            &[("x-request-id", "refused-1")],
        )
        .await;
        assert_revoked_response(&r);
        let mut lines = Vec::new();
        wait_for("the access lines", Duration::from_secs(10), async || {
            lines = gw
                .logs()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["target"] == "revgate::access")
                .collect();
            lines.len() >= 6
        })
        .await;
        let ids: Vec<&str> = lines
            .iter()
            .filter_map(|l| l["request_id"].as_str())
            .collect();
        for want in ["abc-123", made.as_str(), "refused-1"] {
            assert!(ids.contains(&want), "{name}: {want} not in {ids:?}");
        }
        // Without tracing, a caller's traceparent passes through untouched.
        let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
        get_with(
            &format!("{}/data", gw.url),
            "tok-a",
            &[("traceparent", &parent)],
        )
        .await;
        assert_eq!(
            up.last().unwrap().headers["traceparent"],
            parent.as_str(),
            "{name}"
        );
    }
    // Off: the client's id (or none) is what the upstream gets.
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[tracing]\nrequest_id = false\n")
        .spawn();
    get_with(
        &format!("{}/data", gw.url),
        "tok-a",
        &[("x-request-id", "has space")],
    )
    .await;
    assert_eq!(up.last().unwrap().headers["x-request-id"], "has space");
    get_with(&format!("{}/data", gw.url), "tok-a", &[]).await;
    assert!(up.last().unwrap().headers.get("x-request-id").is_none());
}

#[test]
fn tracing_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    for (toml, want) in [
        (
            "otlp_endpoint = \"https://collector:4318/v1/traces\"",
            "tracing.otlp_endpoint: expected http://host:port/v1/traces (OTLP/HTTP), got \"https://collector:4318/v1/traces\"",
        ),
        ("sample_ratio = 2.0", "tracing.sample_ratio: must be between 0 and 1"),
        ("service_name = \"\"", "tracing.service_name: must not be empty"),
        ("export_interval = \"2h\"", "tracing.export_interval: must be between 1ms and 1h"),
        ("request_id = \"yes\"", "tracing.request_id: invalid type: string \"yes\", expected a boolean"),
    ] {
        std::fs::write(&config, format!("[upstream]\nurl = \"http://127.0.0.1:1\"\n[tracing]\n{toml}\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_revgate"))
            .arg("check-config")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("revgate: invalid configuration:\n{}: {want}\n", config.display())
        );
    }
}
