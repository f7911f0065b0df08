//! The vendors' own Python SDKs, unchanged, against the real `revgate` binary
//! in terminate mode: `nylas` (`Client(api_key, api_uri).auth.revoke(token)`),
//! `onelogin` 4.x (`OAuth2Api.revoke_tokens`, HTTP Basic client credentials)
//! and `onelogin` 2.x (`OneLoginClient.revoke_token()`, the documented
//! `client_id:..., client_secret:...` header), and `langchain-auth` 0.3
//! (`Client(api_key, api_url).revoke_tokens(provider_id)`, the key in
//! `x-api-key`, opaque and bound to its user through the admin API), and
//! `codegen-api-client` 1.0 (it has no revoke method: its `ApiClient`, with
//! the opaque key as its default `Authorization: Bearer` header, sends the
//! documented call through its own `param_serialize`/`call_api`). Each
//! SDK call must succeed and
//! the revoked token must then be refused (401) without reaching the
//! upstream, while other tokens still pass.
//!
//! The SDKs (pinned: the versions whose source the dialects were written
//! from) are installed by the tests from PyPI into virtualenvs under Cargo's
//! `CARGO_TARGET_TMPDIR`, kept for later runs. When `python3` or its
//! `venv`/`pip` is missing the tests are skipped with a message; a failing
//! `pip install` (no network) fails them. Set `REVGATE_SDK_PYTHON` (an interpreter with
//! `nylas` and `onelogin` installed) and `REVGATE_SDK_LEGACY_PYTHON` (one
//! with `onelogin<3`) to reuse existing environments.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use support::*;

const NYLAS_KEY: &str = "nylas-api-key-1";
const CLIENT_ID: &str = "ol-client-id";
const CLIENT_SECRET: &str = "ol-client-secret";

const ONELOGIN_SUCCESS: &str =
    r#"{"status":{"error":false,"code":200,"type":"success","message":"Success"}}"#;
const ONELOGIN_AUTH_FAILURE: &str = r#"{"status":{"error":true,"code":401,"type":"Unauthorized","message":"Authentication Failure"}}"#;

// === Python environments ===

/// The SDK versions whose source was read to write the dialects (see
/// `src/dialect/nylas.rs` and `onelogin.rs`); pinned so that a new SDK
/// release is a deliberate change.
const CURRENT_SDKS: &[&str] = &[
    "nylas==6.18.0",
    "onelogin==4.0.1",
    "langchain-auth==0.3.0",
    "codegen-api-client==1.0.0",
];
const LEGACY_SDKS: &[&str] = &["onelogin==2.0.4"];

static CURRENT: OnceLock<Option<PathBuf>> = OnceLock::new();
static LEGACY: OnceLock<Option<PathBuf>> = OnceLock::new();

/// An interpreter with the current SDKs, shared by the tests of this run.
fn current_python() -> Option<PathBuf> {
    CURRENT
        .get_or_init(|| python_with("REVGATE_SDK_PYTHON", "sdk-venv-current", CURRENT_SDKS))
        .clone()
}

/// An interpreter with the legacy OneLogin SDK.
fn legacy_python() -> Option<PathBuf> {
    LEGACY
        .get_or_init(|| python_with("REVGATE_SDK_LEGACY_PYTHON", "sdk-venv-legacy", LEGACY_SDKS))
        .clone()
}

/// A virtualenv under Cargo's test temp dir with `packages` installed
/// (reused by later runs when it already has exactly them), or `None`, with
/// the reason printed, when this machine has no usable `python3 -m venv` and
/// `pip`.
fn python_with(override_var: &str, name: &str, packages: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(override_var) {
        return Some(PathBuf::from(p));
    }
    let usable = |args: &[&str]| {
        Command::new("python3")
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !usable(&["-m", "pip", "--version"]) || !usable(&["-m", "venv", "--help"]) {
        // A test that cannot run fails: scripts/test.sh installs what it needs.
        panic!(
            "the SDK tests need python3 with venv and pip (or {override_var}); none found \
             (scripts/test.sh installs python3-venv and python3-pip when absent)"
        );
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = venv.join("bin").join("python");
    let marker = venv.join("revgate-installed.txt");
    let wanted = packages.join("\n");
    if python.exists() && std::fs::read_to_string(&marker).ok().as_deref() == Some(&wanted) {
        return Some(python);
    }
    let made = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .output()
        .expect("run python3 -m venv");
    if !made.status.success() {
        panic!(
            "python3 -m venv failed (is python3-venv installed?): {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let pip = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages)
        .output()
        .expect("run pip");
    assert!(
        pip.status.success(),
        "pip install {packages:?} failed (PyPI unreachable?):\n{}\n{}",
        String::from_utf8_lossy(&pip.stdout),
        String::from_utf8_lossy(&pip.stderr)
    );
    std::fs::write(&marker, wanted).expect("write the venv marker");
    Some(python)
}

/// Runs a Python script with arguments off the async runtime; returns the
/// JSON object it prints as its last line.
async fn run_script(python: &Path, script: &'static str, args: Vec<String>) -> serde_json::Value {
    let python = python.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sdk_call.py");
        std::fs::write(&path, script).unwrap();
        Command::new(&python)
            .arg(&path)
            .args(&args)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SDK script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("script output not JSON ({e}): {stdout}"))
}

fn terminate_gateway(upstream: &str) -> RunningGateway {
    Gateway::new()
        .upstream(upstream)
        .arg("--revoke-mode")
        .arg("terminate")
        .toml(&format!(
            "[revoke.nylas]\napi_keys = [\"{NYLAS_KEY}\"]\n\n[revoke.onelogin]\nclients = [{{ client_id = \"{CLIENT_ID}\", client_secret = \"{CLIENT_SECRET}\" }}]"
        ))
        .spawn()
}

/// A request with `token` reaches the upstream (200, one more hit).
async fn passes(gw: &RunningGateway, up: &RunningUpstream, token: &str) -> bool {
    let before = up.hits();
    let r = get_bearer(&format!("{}/api/resource", gw.url), token).await;
    r.status == 200 && up.hits() == before + 1
}

/// A request with `token` is refused (401) and never reaches the upstream.
async fn refused(gw: &RunningGateway, up: &RunningUpstream, token: &str) -> bool {
    let before = up.hits();
    let r = get_bearer(&format!("{}/api/resource", gw.url), token).await;
    r.status == 401 && up.hits() == before
}

// === nylas ===

const NYLAS_SCRIPT: &str = r#"
import json, sys
from nylas import Client
from nylas.models.errors import NylasOAuthError
url, key, token = sys.argv[1:4]
def oauth_error(call):
    try:
        call()
        return None
    except NylasOAuthError as e:
        return {"status": e.status_code, "error": e.error, "error_code": e.error_code,
                "error_description": e.error_description, "error_uri": e.error_uri}
out = {
    "revoke": Client(key, url).auth.revoke(token),
    "revoke_again": Client(key, url).auth.revoke(token),
    "empty_token": oauth_error(lambda: Client(key, url).auth.revoke("")),
    "wrong_key": oauth_error(lambda: Client("not-the-key", url).auth.revoke(token)),
}
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nylas_sdk_revoke_works_against_terminate_mode() {
    let Some(python) = current_python() else {
        return;
    };
    let up = Upstream::new().spawn().await;
    let gw = terminate_gateway(&up.url);
    // Characters the SDK percent-encodes (and `+`, which must not become a space).
    let encoded = "nylas%tok&x=1+y/z?#";
    let header_token = "nylas-access+token/with=chars";
    let other = "nylas-other-token";
    assert!(passes(&gw, &up, header_token).await);
    assert!(passes(&gw, &up, other).await);

    let out = run_script(
        &python,
        NYLAS_SCRIPT,
        vec![gw.url.clone(), NYLAS_KEY.into(), header_token.into()],
    )
    .await;
    assert_eq!(out["revoke"], true, "{out}");
    assert_eq!(out["revoke_again"], true, "revoking twice succeeds: {out}");
    assert_eq!(out["empty_token"]["status"], 400, "{out}");
    assert_eq!(out["empty_token"]["error"], "invalid_request", "{out}");
    // Sent as "400"; the SDK's model converts it with int().
    assert_eq!(out["empty_token"]["error_code"], 400, "{out}");
    assert_eq!(out["wrong_key"]["status"], 401, "{out}");
    assert_eq!(out["wrong_key"]["error"], "invalid_client", "{out}");
    assert!(
        !out.to_string().contains(header_token),
        "no error echoes the token"
    );

    assert!(
        refused(&gw, &up, header_token).await,
        "the revoked token still passes"
    );
    assert!(passes(&gw, &up, other).await, "another token is refused");

    // A token the SDK must percent-encode (`%`, `&`, `=`, `+`, `?`, `#`)
    // round-trips too; it is not a valid bearer token, so check it through
    // the admin lookup.
    let out = run_script(
        &python,
        NYLAS_SCRIPT,
        vec![gw.url.clone(), NYLAS_KEY.into(), encoded.into()],
    )
    .await;
    assert_eq!(out["revoke"], true, "{out}");
    let look = post_json(
        &format!("{}/admin/v1/revocations/lookup", gw.admin_url),
        &serde_json::json!({ "token": encoded }),
    )
    .await;
    assert_eq!(
        look.json()["revoked"],
        true,
        "the encoded token was not the one revoked: {}",
        look.text()
    );
}

// === onelogin 4.x ===

/// What HTTP Basic callers are answered (src/dialect/onelogin.rs).
const ONELOGIN_BASIC_SUCCESS: &str = r#"{"status":{"error":false,"code":200,"type":"success","message":"Success"},"error":false,"code":200,"type":"success","message":"Success"}"#;

const ONELOGIN_SCRIPT: &str = r#"
import json, sys
import onelogin
from onelogin.models.revoke_tokens_request import RevokeTokensRequest
from onelogin.exceptions import ApiException
url, cid, secret, tok, tok2 = sys.argv[1:6]
def api(user, password):
    cfg = onelogin.Configuration(host=url, username=user, password=password)
    return onelogin.OAuth2Api(onelogin.ApiClient(cfg))
out = {}
r = api(cid, secret).revoke_tokens_with_http_info(
    revoke_tokens_request=RevokeTokensRequest(access_token=tok), _preload_content=False)
out["raw"] = {"status": r.status_code, "body": r.raw_data.decode()}
try:
    res = api(cid, secret).revoke_tokens(revoke_tokens_request=RevokeTokensRequest(access_token=tok2))
    out["plain"] = {"raised": None, "result": str(res)}
except Exception as e:
    out["plain"] = {"raised": type(e).__name__}
try:
    api(cid, "wrong-secret").revoke_tokens(revoke_tokens_request=RevokeTokensRequest(access_token=tok))
    out["wrong_secret"] = None
except ApiException as e:
    body = e.body.decode() if isinstance(e.body, bytes) else e.body
    out["wrong_secret"] = {"status": e.status, "body": body}
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onelogin_sdk_revoke_works_against_terminate_mode() {
    let Some(python) = current_python() else {
        return;
    };
    let up = Upstream::new().spawn().await;
    let gw = terminate_gateway(&up.url);
    let (tok, tok2, other) = ("ol-access-token-1", "ol-access+token/2=", "ol-other");
    for t in [tok, tok2, other] {
        assert!(passes(&gw, &up, t).await);
    }

    let out = run_script(
        &python,
        ONELOGIN_SCRIPT,
        vec![
            gw.url.clone(),
            CLIENT_ID.into(),
            CLIENT_SECRET.into(),
            tok.into(),
            tok2.into(),
        ],
    )
    .await;
    // The SDK's raw call: the documented success body with its members also
    // at the top level (HTTP Basic callers; see src/dialect/onelogin.rs).
    assert_eq!(out["raw"]["status"], 200, "{out}");
    assert_eq!(out["raw"]["body"], ONELOGIN_BASIC_SUCCESS, "{out}");
    let documented: serde_json::Value = serde_json::from_str(ONELOGIN_SUCCESS).unwrap();
    let answered: serde_json::Value =
        serde_json::from_str(out["raw"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(answered["status"], documented["status"], "{out}");
    // The SDK's plain call succeeds: it parses the top-level members into
    // its flat `Error` model (the documented body alone made it raise
    // pydantic's ValidationError after the revocation).
    assert_eq!(out["plain"]["raised"], serde_json::Value::Null, "{out}");
    let result = out["plain"]["result"].as_str().unwrap_or_default();
    assert!(
        result.contains("code=200") && result.contains("message='Success'"),
        "{out}"
    );
    // Wrong client secret: 401 in the documented shape.
    assert_eq!(out["wrong_secret"]["status"], 401, "{out}");
    assert_eq!(out["wrong_secret"]["body"], ONELOGIN_AUTH_FAILURE, "{out}");

    assert!(
        refused(&gw, &up, tok).await,
        "the revoked token still passes"
    );
    assert!(
        refused(&gw, &up, tok2).await,
        "the plain call's token was not revoked"
    );
    assert!(passes(&gw, &up, other).await, "another token is refused");
}

// === onelogin 2.x (the documented Authorization header) ===

const LEGACY_SCRIPT: &str = r#"
import json, sys
from onelogin.api.client import OneLoginClient
url, cid, secret, tok = sys.argv[1:5]
def client(secret):
    c = OneLoginClient(cid, secret)
    # Point the SDK at revgate: its URLs are https://<subdomain>.onelogin.com/...
    c.get_url = lambda base, *a, **k: base.replace("https://%s.onelogin.com", url)
    c.access_token = tok
    return c
ok = client(secret)
wrong = client("wrong-secret")
out = {
    "revoke": ok.revoke_token(),
    "wrong_secret": {"result": wrong.revoke_token(), "error": wrong.error,
                     "description": wrong.error_description},
}
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_onelogin_sdk_revoke_works_against_terminate_mode() {
    let Some(python) = legacy_python() else {
        return;
    };
    let up = Upstream::new().spawn().await;
    let gw = terminate_gateway(&up.url);
    let (tok, other) = ("ol-legacy-token", "ol-legacy-other");
    assert!(passes(&gw, &up, tok).await);

    let out = run_script(
        &python,
        LEGACY_SCRIPT,
        vec![
            gw.url.clone(),
            CLIENT_ID.into(),
            CLIENT_SECRET.into(),
            tok.into(),
        ],
    )
    .await;
    assert_eq!(out["revoke"], true, "{out}");
    assert_eq!(out["wrong_secret"]["result"], false, "{out}");
    assert_eq!(out["wrong_secret"]["error"], "401", "{out}");
    assert_eq!(
        out["wrong_secret"]["description"], "Authentication Failure",
        "{out}"
    );

    assert!(
        refused(&gw, &up, tok).await,
        "the revoked token still passes"
    );
    assert!(passes(&gw, &up, other).await, "another token is refused");
}

// === langchain-auth (LangSmith) ===

const LANGCHAIN_AUTH_SCRIPT: &str = r#"
import asyncio, json, sys
from langchain_auth import Client
url, key, unknown = sys.argv[1:4]
async def main():
    out = {}
    r = await Client(api_key=key, api_url=url).revoke_tokens("github")
    out["revoke"] = {"message": r.message, "provider_id": r.provider_id}
    try:
        await Client(api_key=unknown, api_url=url).revoke_tokens("github")
        out["unknown"] = None
    except Exception as e:
        out["unknown"] = str(e)
    print(json.dumps(out))
asyncio.run(main())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langchain_auth_revoke_tokens_works_with_a_bound_opaque_api_key() {
    let Some(python) = current_python() else {
        return;
    };
    let up = Upstream::new().spawn().await;
    let gw = terminate_gateway(&up.url);
    let bind = |credential: &str, provider: Option<&str>| {
        let mut body = serde_json::json!({"credential": credential, "sub": "ls-user", "issued_at": now() - 60});
        if let Some(p) = provider {
            body["provider"] = p.into();
        }
        let url = format!("{}/admin/v1/principals", gw.admin_url);
        async move { post_json(&url, &body).await }
    };
    assert_eq!(bind("lsv2_pt_opaque_key_1", None).await.status, 200);
    assert_eq!(
        bind("ls-user-github-token", Some("github")).await.status,
        200
    );
    assert_eq!(
        bind("ls-user-gitlab-token", Some("gitlab")).await.status,
        200
    );
    for t in ["ls-user-github-token", "ls-user-gitlab-token"] {
        assert!(passes(&gw, &up, t).await);
    }
    let out = run_script(
        &python,
        LANGCHAIN_AUTH_SCRIPT,
        vec![
            gw.url.clone(),
            "lsv2_pt_opaque_key_1".into(),
            "lsv2_unknown".into(),
        ],
    )
    .await;
    assert_eq!(
        out["revoke"],
        serde_json::json!({"message": "Tokens revoked", "provider_id": "github"}),
        "{out}"
    );
    // An unknown key names nobody: the client raises on the dialect's 401.
    assert_eq!(
        out["unknown"], r#"HTTP 401: {"detail":"Not authenticated"}"#,
        "{out}"
    );
    assert!(
        refused(&gw, &up, "ls-user-github-token").await,
        "the user's github token still passes"
    );
    assert!(
        passes(&gw, &up, "ls-user-gitlab-token").await,
        "another provider's token is refused"
    );
}

// === codegen-api-client ===

const CODEGEN_SCRIPT: &str = r#"
import json, sys
import codegen_api_client as cg
url, key = sys.argv[1:3]
cfg = cg.Configuration(host=url)
client = cg.ApiClient(cfg, header_name="Authorization", header_value="Bearer " + key)
params = client.param_serialize("POST", "/v1/oauth/tokens/revoke",
                                query_params=[("provider", "github"), ("org_id", 7)])
r = client.call_api(*params)
r.read()
print(json.dumps({"status": r.status, "body": r.data.decode()}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codegen_api_client_revokes_with_a_bound_opaque_key() {
    let Some(python) = current_python() else {
        return;
    };
    let up = Upstream::new().spawn().await;
    let gw = terminate_gateway(&up.url);
    let t = now();
    for (credential, org, provider) in [
        ("cg-opaque-key-1", None, None),
        ("cg-user-org7-github", Some("7"), Some("github")),
        ("cg-user-org8-github", Some("8"), Some("github")),
    ] {
        let mut body =
            serde_json::json!({"credential": credential, "sub": "cg-user", "issued_at": t - 60});
        if let (Some(o), Some(p)) = (org, provider) {
            body["org"] = o.into();
            body["provider"] = p.into();
        }
        let r = post_json(&format!("{}/admin/v1/principals", gw.admin_url), &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(passes(&gw, &up, "cg-user-org7-github").await);
    let out = run_script(
        &python,
        CODEGEN_SCRIPT,
        vec![gw.url.clone(), "cg-opaque-key-1".into()],
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    assert!(
        refused(&gw, &up, "cg-user-org7-github").await,
        "the user's org-7 github token still passes"
    );
    assert!(
        passes(&gw, &up, "cg-user-org8-github").await,
        "another org's token is refused"
    );
    // An unknown key names nobody: the dialect's 401, nothing revoked.
    let out = run_script(
        &python,
        CODEGEN_SCRIPT,
        vec![gw.url.clone(), "cg-unknown".into()],
    )
    .await;
    assert_eq!(out["status"], 401, "{out}");
    assert!(passes(&gw, &up, "cg-user-org8-github").await);
}
