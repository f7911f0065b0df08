//! Offline checks of `deploy/`: every Kustomize overlay renders (`kubectl
//! kustomize`, Debian's `kubectl`) and every rendered object validates: the
//! built-in kinds against the Kubernetes schemas (`kubernetes-validate`,
//! strict, oldest and newest version we support), the custom resources
//! (cert-manager's Certificate, the Prometheus Operator's ServiceMonitor and
//! PrometheusRule) against models generated from their CRDs
//! (`deploy/tools/check_crds.py`, strict too); every revgate config an
//! overlay generates parses and validates; the pods are wired to their
//! configs (ports, probes, config path, writable journal dir, admin token
//! and fingerprint key from a Secret, TLS files from a mounted Secret, grace
//! period covering preStop + drain); the selectors select something; and
//! the Dockerfile's build and run commands are the ones the docs show.
//!
//! The Python tools come from PyPI: the test installs them into a venv
//! under the target directory the first time (`python3 -m venv target/kv`,
//! then `pip install` of [`PY_PACKAGES`]), and reuses it afterwards. The
//! same venv's PyYAML turns the rendered manifests into JSON
//! (`deploy/tools/manifest_facts.py`), so no YAML crate is needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use revgate::config::{Config, Overrides};
use serde_json::Value;

/// The validator release (and so the schema set) the test installs.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// Everything the venv holds: the validator, and the CRD models.
const PY_PACKAGES: [&str; 4] = [
    KUBERNETES_VALIDATE,
    "cloudcoil==0.6.0",
    "cloudcoil-models-prometheus-operator==0.80.1.0",
    "cloudcoil-models-cert-manager==1.17.1.0",
];
/// Kubernetes versions the manifests must validate against: the oldest we
/// claim to support and the newest the validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];
/// What a pod's grace period must leave beyond preStop + drain.
const GRACE_SLACK: u64 = 5;
/// Every kustomization one applies (`kubectl apply -k deploy/kubernetes/X`).
const OVERLAYS: [&str; 5] = [
    "overlays/ingress",
    "overlays/ingress-redis",
    "overlays/sidecar",
    "overlays/tls",
    "monitoring",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        Some(p) => root().join(p),
        None => root().join("target"),
    }
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The venv holding kubernetes-validate, the CRD models and PyYAML,
/// installed on first use (and again when [`PY_PACKAGES`] changes).
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = target_dir().join("kv");
        let stamp = dir.join("revgate-packages.txt");
        let want = PY_PACKAGES.join("\n");
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
            if !dir.join("bin").join("pip").exists() {
                run(Command::new("python3").arg("-m").arg("venv").arg(&dir));
            }
            run(Command::new(dir.join("bin").join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(PY_PACKAGES));
            std::fs::write(&stamp, &want).unwrap();
        }
        let validator = dir.join("bin").join("kubernetes-validate");
        assert!(
            validator.exists(),
            "{} missing after install",
            validator.display()
        );
        dir
    })
}

/// One overlay, rendered: everything, the built-in kinds, the custom
/// resources (each a YAML file under target/kustomize/).
struct Rendered {
    overlay: &'static str,
    all: PathBuf,
    core: PathBuf,
    crds: PathBuf,
}

/// `kubectl kustomize` of every overlay.
fn rendered() -> &'static [Rendered] {
    static RENDERED: OnceLock<Vec<Rendered>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let out_dir = target_dir().join("kustomize");
        std::fs::create_dir_all(&out_dir).unwrap();
        OVERLAYS
            .iter()
            .map(|overlay| {
                let out = run(Command::new("kubectl")
                    .arg("kustomize")
                    .arg(root().join("deploy/kubernetes").join(overlay)));
                let stem = overlay.replace('/', "-");
                let r = Rendered {
                    overlay,
                    all: out_dir.join(format!("{stem}.yaml")),
                    core: out_dir.join(format!("{stem}.core.yaml")),
                    crds: out_dir.join(format!("{stem}.crds.yaml")),
                };
                std::fs::write(&r.all, &out.stdout).unwrap();
                run(Command::new(venv().join("bin").join("python"))
                    .arg(root().join("deploy/tools/split_manifests.py"))
                    .args([&r.all, &r.core, &r.crds]));
                r
            })
            .collect()
    })
}

/// Runs kubernetes-validate on `files`; returns (success, output).
fn validate(version: &str, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(venv().join("bin").join("kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", version])
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A kind without a schema is only a WARN with exit 0: it was not
    // validated, so it counts as a failure too.
    let clean = out.status.success()
        && !text
            .lines()
            .any(|l| l.starts_with("ERROR") || l.starts_with("WARN"));
    (clean, text)
}

/// Runs check_crds.py on `files`; returns (success, output).
fn check_crds(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(venv().join("bin").join("python"))
        .arg(root().join("deploy/tools/check_crds.py"))
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every rendered document, with its overlay.
fn docs() -> &'static [(&'static str, Value)] {
    static DOCS: OnceLock<Vec<(&'static str, Value)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let by_file: BTreeMap<String, &'static str> = rendered()
            .iter()
            .map(|r| (r.all.display().to_string(), r.overlay))
            .collect();
        let out = run(Command::new(venv().join("bin").join("python"))
            .arg(root().join("deploy/tools/manifest_facts.py"))
            .args(rendered().iter().map(|r| &r.all)));
        let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        all.into_iter()
            .map(|v| (by_file[v["file"].as_str().unwrap()], v["doc"].clone()))
            .collect()
    })
}

/// The documents of `kind`, in any overlay.
fn kind<'a>(kind: &'a str) -> impl Iterator<Item = &'static (&'static str, Value)> + 'a {
    docs().iter().filter(move |(_, d)| d["kind"] == kind)
}

/// The documents of `kind` in `overlay`.
fn kind_in<'a>(overlay: &'a str, k: &'a str) -> impl Iterator<Item = &'static Value> + 'a {
    kind(k).filter(move |(o, _)| *o == overlay).map(|(_, d)| d)
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap()
}

/// The revgate configs the overlays generate, by (overlay, ConfigMap name).
fn embedded_configs() -> BTreeMap<(String, String), Config> {
    let mut out = BTreeMap::new();
    for (overlay, doc) in kind("ConfigMap") {
        let Some(data) = doc["data"].as_object() else {
            continue;
        };
        for (key, text) in data {
            if !key.ends_with(".toml") {
                continue;
            }
            let text = text.as_str().unwrap();
            let config = Config::from_toml(text)
                .unwrap_or_else(|e| panic!("{overlay}: ConfigMap {} key {key}: {e}", name(doc)));
            out.insert((overlay.to_string(), name(doc).to_string()), config);
        }
    }
    out
}

/// A certificate and key for configs whose TLS files come from a Secret
/// (they do not exist here): generated once.
fn stand_in_tls() -> &'static (PathBuf, PathBuf) {
    static FILES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = target_dir().join("kustomize");
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["api.example.com".into()]).unwrap();
        let (c, k) = (dir.join("stand-in.crt"), dir.join("stand-in.key"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        (c, k)
    })
}

/// `config` as a pod runs it: with a shared store, the fingerprint key comes
/// from `REVGATE_FINGERPRINT_KEY` (a Secret; `pods_are_wired_to_their_configs`
/// checks the env is there), so stand a placeholder in for it.
fn as_deployed(config: &Config) -> Config {
    let mut c = config.clone();
    if c.store.url != "memory" && c.tokens.fingerprint_key.is_none() {
        c.tokens.fingerprint_key = Some("ab".repeat(32));
    }
    // Likewise the admin token (`REVGATE_ADMIN_TOKEN`, checked above).
    if c.admin.token.is_none() {
        c.admin.token = Some("placeholder-admin-token".into());
    }
    // And the TLS files (a mounted Secret, checked above).
    if let Some(tls) = &mut c.server.tls {
        let (cert, key) = stand_in_tls();
        tls.cert = cert.clone();
        tls.key = key.clone();
    }
    c
}

fn pods() -> impl Iterator<Item = (&'static str, &'static str, &'static Value)> {
    docs()
        .iter()
        .filter(|(_, d)| {
            matches!(
                d["kind"].as_str(),
                Some("Deployment" | "StatefulSet" | "DaemonSet")
            )
        })
        .map(|(o, d)| (*o, name(d), &d["spec"]["template"]))
}

fn prestop_sleep(container: &Value) -> Option<u64> {
    let cmd = container["lifecycle"]["preStop"]["exec"]["command"].as_array()?;
    match cmd.as_slice() {
        [s, n] if s == "sleep" => n.as_str()?.parse().ok(),
        _ => None,
    }
}

/// `ENTRYPOINT`'s and `CMD`'s JSON arrays, and the `# build:` / `# run:` lines.
struct Dockerfile {
    text: String,
    cmd: Vec<String>,
    build: String,
    run: String,
}

fn dockerfile() -> Dockerfile {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("Dockerfile has no {prefix:?} line"))
            .trim()
            .to_string()
    };
    let cmd: Vec<String> = serde_json::from_str(&line("CMD ")).unwrap();
    Dockerfile {
        cmd,
        build: line("# build: "),
        run: line("# run: "),
        text,
    }
}

// === tests ===

#[test]
fn every_overlay_renders_and_every_object_validates() {
    // Every kustomization under deploy/kubernetes that is not the base or a
    // component is in OVERLAYS (so none goes untested), and the other way.
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                let rel = path
                    .parent()
                    .unwrap()
                    .strip_prefix(root().join("deploy/kubernetes"));
                out.push(rel.unwrap().display().to_string());
            }
        }
    }
    let mut found = Vec::new();
    walk(&root().join("deploy/kubernetes"), &mut found);
    found.retain(|d| d != "base" && !d.starts_with("components/"));
    found.sort();
    let mut want: Vec<String> = OVERLAYS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want);
    // No plain manifests beside the kustomizations: everything is rendered.
    assert!(!root().join("deploy/kubernetes/sidecar.yaml").exists());

    let core: Vec<PathBuf> = rendered().iter().map(|r| r.core.clone()).collect();
    for version in KUBERNETES_VERSIONS {
        let (ok, out) = validate(version, &core);
        assert!(
            ok,
            "rendered overlays do not validate against {version}:\n{out}"
        );
    }
    let crds: Vec<PathBuf> = rendered().iter().map(|r| r.crds.clone()).collect();
    let (ok, out) = check_crds(&crds);
    assert!(ok, "custom resources do not validate:\n{out}");
    // Each overlay has what it is for.
    let has = |overlay: &str, k: &str| kind_in(overlay, k).count();
    assert_eq!(has("overlays/tls", "Certificate"), 1);
    assert_eq!(has("monitoring", "ServiceMonitor"), 1);
    assert_eq!(has("monitoring", "PrometheusRule"), 1);
    assert_eq!(has("overlays/ingress", "PersistentVolumeClaim"), 1);
    for o in ["overlays/ingress-redis", "overlays/sidecar", "overlays/tls"] {
        assert_eq!(has(o, "StatefulSet"), 1, "{o}: Redis with Sentinel");
    }
    for o in ["overlays/ingress-redis", "overlays/tls"] {
        assert_eq!(has(o, "HorizontalPodAutoscaler"), 1, "{o}");
        assert_eq!(has(o, "PodDisruptionBudget"), 1, "{o}");
    }
    // Nobody is handed a made-up registry or a Secret's value.
    for r in rendered() {
        let text = std::fs::read_to_string(&r.all).unwrap();
        assert!(!text.contains("registry.example.com"), "{}", r.overlay);
    }
    assert_eq!(
        kind("Secret").count(),
        0,
        "Secrets are the operator's to create"
    );

    // The validators really validate: a broken manifest, an unknown kind
    // and a custom resource with a misspelt field all fail.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: many\n",
    )
    .unwrap();
    assert!(!validate(KUBERNETES_VERSIONS[0], std::slice::from_ref(&bad)).0);
    std::fs::write(
        &bad,
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: x\n",
    )
    .unwrap();
    assert!(!validate(KUBERNETES_VERSIONS[0], std::slice::from_ref(&bad)).0);
    assert!(!check_crds(std::slice::from_ref(&bad)).0);
    std::fs::write(
        &bad,
        "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: x\nspec:\n  selector: {}\n  endpoints:\n    - port: admin\n      intervall: 30s\n",
    )
    .unwrap();
    let (ok, out) = check_crds(std::slice::from_ref(&bad));
    assert!(!ok && out.contains("intervall: unknown field"), "{out}");
}

#[test]
fn embedded_configs_parse_and_validate() {
    let configs = embedded_configs();
    for overlay in [
        "overlays/ingress",
        "overlays/ingress-redis",
        "overlays/sidecar",
        "overlays/tls",
    ] {
        assert!(
            configs.keys().any(|(o, _)| o == overlay),
            "{overlay} generates no revgate config: {configs:?}"
        );
    }
    for ((overlay, name), config) in &configs {
        as_deployed(config)
            .validate()
            .unwrap_or_else(|e| panic!("{overlay}: ConfigMap {name}: {e}"));
    }
    // The ingress overlay keeps the embedded store on its claim; the others
    // share Redis through Sentinel; the tls overlay terminates TLS.
    let store = |o: &str| {
        configs
            .iter()
            .find(|((ov, _), _)| ov == o)
            .map(|(_, c)| c.clone())
            .unwrap()
    };
    assert_eq!(store("overlays/ingress").store.url, "memory");
    for o in ["overlays/ingress-redis", "overlays/sidecar", "overlays/tls"] {
        assert!(
            store(o)
                .store
                .url
                .starts_with("redis+sentinel://revgate-redis-sentinel:26379/"),
            "{o}"
        );
    }
    assert!(store("overlays/tls").server.tls.is_some());
}

#[test]
fn pods_are_wired_to_their_configs() {
    let configs = embedded_configs();
    let cmd = dockerfile().cmd;
    let mut revgate_pods = 0;
    for (overlay, workload, pod) in pods() {
        let at = format!("{overlay}: {workload}");
        let spec = &pod["spec"];
        let containers = spec["containers"].as_array().unwrap();
        let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        assert_eq!(
            spec["securityContext"]["runAsNonRoot"], true,
            "{at}: runAsNonRoot"
        );
        for c in containers {
            let sc = &c["securityContext"];
            assert_eq!(
                sc["readOnlyRootFilesystem"], true,
                "{at}/{}: read-only root",
                c["name"]
            );
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}/{}", c["name"]);
            assert!(
                c["resources"]["requests"].is_object(),
                "{at}/{}: requests (the HPA needs them)",
                c["name"]
            );
        }

        let Some(rg) = containers.iter().find(|c| c["name"] == "revgate") else {
            continue;
        };
        revgate_pods += 1;
        let args: Vec<&str> = rg["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args, cmd, "{at}: args are the image's CMD");
        let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];

        // The config file is a mounted ConfigMap key.
        let mounts = rg["volumeMounts"].as_array().unwrap();
        let volumes = spec["volumes"].as_array().unwrap();
        let volume = |mount: &Value| {
            volumes
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap_or_else(|| panic!("{at}: no volume {}", mount["name"]))
        };
        let config_mount = mounts
            .iter()
            .find(|m| {
                Path::new(config_path).parent() == Some(Path::new(m["mountPath"].as_str().unwrap()))
            })
            .unwrap_or_else(|| panic!("{at}: nothing mounted at {config_path}'s directory"));
        let cm_name = volume(config_mount)["configMap"]["name"].as_str().unwrap();
        let config = configs
            .get(&(overlay.to_string(), cm_name.to_string()))
            .unwrap_or_else(|| panic!("{at}: ConfigMap {cm_name} not rendered"));
        // A shared store needs the fingerprint key shared by every replica.
        if config.store.url != "memory" && config.tokens.fingerprint_key.is_none() {
            let env = rg["env"].as_array().cloned().unwrap_or_default();
            assert!(
                env.iter().any(|e| e["name"] == "REVGATE_FINGERPRINT_KEY"
                    && e["valueFrom"]["secretKeyRef"].is_object()),
                "{at}: REVGATE_FINGERPRINT_KEY from a Secret"
            );
        }
        // An admin listener off loopback needs its token, from a Secret.
        let admin_ip: std::net::SocketAddr = config.admin.listen.parse().unwrap();
        if !admin_ip.ip().is_loopback() && config.admin.token.is_none() {
            let env = rg["env"].as_array().cloned().unwrap_or_default();
            assert!(
                env.iter().any(|e| e["name"] == "REVGATE_ADMIN_TOKEN"
                    && e["valueFrom"]["secretKeyRef"].is_object()),
                "{at}: REVGATE_ADMIN_TOKEN from a Secret"
            );
        }
        let settings = as_deployed(config).validate().unwrap();
        let file_name = Path::new(config_path)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            kind_in(overlay, "ConfigMap")
                .any(|d| name(d) == cm_name && d["data"][file_name].is_string()),
            "{at}: ConfigMap {cm_name} has no key {file_name}"
        );
        // The listener's certificate: files in a mounted Secret.
        if let Some(tls) = &config.server.tls {
            for file in [&tls.cert, &tls.key] {
                let m = mounts
                    .iter()
                    .find(|m| file.parent() == Some(Path::new(m["mountPath"].as_str().unwrap())))
                    .unwrap_or_else(|| {
                        panic!("{at}: {} is not in a mounted volume", file.display())
                    });
                assert!(
                    volume(m)["secret"]["secretName"].is_string(),
                    "{at}: TLS from a Secret"
                );
            }
        }

        // The journal's directory is writable: a mounted emptyDir or PVC, since
        // the root filesystem is read-only.
        let journal_dir = config.store.journal.parent().unwrap();
        let state = mounts
            .iter()
            .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == journal_dir)
            .unwrap_or_else(|| panic!("{at}: {} is not a mounted volume", journal_dir.display()));
        assert_ne!(state["readOnly"], true, "{at}: journal dir read-only");
        assert!(
            volume(state)["configMap"].is_null(),
            "{at}: journal dir is a ConfigMap"
        );

        // Ports: the container's named ports are the config's listeners.
        let port = |n: &str| {
            rg["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == n)
                .unwrap_or_else(|| panic!("{at}: no port named {n}"))["containerPort"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(
            port("http"),
            u64::from(settings.listen.port()),
            "{at}: http port"
        );
        assert_eq!(
            port("admin"),
            u64::from(settings.admin_listen.port()),
            "{at}: admin port"
        );
        assert!(
            settings.admin_listen.ip().is_unspecified(),
            "{at}: the kubelet probes the pod IP, so admin.listen must be 0.0.0.0"
        );

        // Probes on the admin port.
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &rg[probe]["httpGet"];
            assert_eq!(get["path"], path, "{at}: {probe}");
            assert_eq!(get["port"], "admin", "{at}: {probe}");
        }

        // Shutdown: preStop + drain fit in the grace period, and every other
        // container outlives revgate's drain.
        let drain = config.server.drain_timeout;
        let sleep =
            prestop_sleep(rg).unwrap_or_else(|| panic!("{at}: revgate needs a preStop sleep"));
        let revgate_done = Duration::from_secs(sleep) + drain;
        assert!(
            Duration::from_secs(grace) >= revgate_done + Duration::from_secs(GRACE_SLACK),
            "{at}: terminationGracePeriodSeconds {grace} < preStop {sleep} s + drain {drain:?} + {GRACE_SLACK} s"
        );
        for other in containers.iter().filter(|c| c["name"] != "revgate") {
            let s = prestop_sleep(other).unwrap_or(0);
            assert!(
                Duration::from_secs(s) >= revgate_done && s < grace,
                "{at}/{}: preStop sleep {s} s must cover revgate's {revgate_done:?} and fit in {grace} s",
                other["name"]
            );
        }
    }
    assert_eq!(revgate_pods, 4, "the four revgate overlays' pods");
}

#[test]
fn selectors_and_references_resolve() {
    for overlay in OVERLAYS {
        references_resolve_in(overlay);
    }
}

fn references_resolve_in(overlay: &str) {
    let templates: Vec<&Value> = pods()
        .filter(|(o, _, _)| *o == overlay)
        .map(|(_, _, pod)| pod)
        .collect();
    let selects = |selector: &Value| -> Vec<&Value> {
        let want = selector.as_object().unwrap();
        templates
            .iter()
            .copied()
            .filter(|pod| {
                want.iter()
                    .all(|(k, v)| &pod["metadata"]["labels"][k.as_str()] == v)
            })
            .collect()
    };
    let named_ports = |pod: &Value| -> Vec<String> {
        pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["name"].as_str().map(String::from))
            .collect()
    };

    for svc in kind_in(overlay, "Service") {
        let pods = selects(&svc["spec"]["selector"]);
        assert!(!pods.is_empty(), "Service {} selects no pod", name(svc));
        for p in svc["spec"]["ports"].as_array().unwrap() {
            if let Some(target) = p["targetPort"].as_str() {
                assert!(
                    pods.iter()
                        .all(|pod| named_ports(pod).iter().any(|n| n == target)),
                    "Service {}: targetPort {target} not on its pods",
                    name(svc)
                );
            }
        }
    }
    for k in ["PodDisruptionBudget", "NetworkPolicy"] {
        for d in kind_in(overlay, k) {
            let sel = if k == "NetworkPolicy" {
                &d["spec"]["podSelector"]["matchLabels"]
            } else {
                &d["spec"]["selector"]["matchLabels"]
            };
            assert!(!selects(sel).is_empty(), "{k} {} selects no pod", name(d));
        }
    }
    for hpa in kind_in(overlay, "HorizontalPodAutoscaler") {
        let target = &hpa["spec"]["scaleTargetRef"];
        assert!(
            kind_in(overlay, target["kind"].as_str().unwrap()).any(|d| name(d) == target["name"]),
            "HPA {} targets a missing {}",
            name(hpa),
            target["name"]
        );
        assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    }
    for pdb in kind_in(overlay, "PodDisruptionBudget") {
        // maxUnavailable 1 with the HPA's minimum leaves someone serving.
        assert_eq!(pdb["spec"]["maxUnavailable"], 1, "PDB {}", name(pdb));
    }
    for (_, workload, pod) in pods().filter(|(o, _, _)| *o == overlay) {
        for v in pod["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                assert!(
                    kind_in(overlay, "ConfigMap").any(|d| name(d) == cm),
                    "{overlay}/{workload}: ConfigMap {cm} not rendered"
                );
            }
        }
    }
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_matches_the_docs() {
    let df = dockerfile();
    let froms = df.text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage");
    let user = df
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER line");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "USER {user}"
    );
    let expose = df
        .text
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap();
    assert!(
        expose.contains("8080") && expose.contains("9090"),
        "EXPOSE {expose}"
    );
    assert!(df.text.contains("ENTRYPOINT [\"/usr/local/bin/revgate\"]"));
    assert!(
        df.build.starts_with("docker build -f deploy/Dockerfile "),
        "{}",
        df.build
    );
    assert!(df.run.starts_with("docker run "), "{}", df.run);

    // What the Dockerfile COPYs from the context exists (and is not ignored).
    for l in df
        .text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = l.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(root().join(src).exists(), "COPY source {src} missing");
        }
    }
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        ".dockerignore keeps target/ out"
    );

    // The image's own config: valid once the upstream is given at run time,
    // and listening where EXPOSE says.
    let text = std::fs::read_to_string(root().join("deploy/docker/revgate.toml")).unwrap();
    let mut config = Config::from_toml(&text).unwrap();
    assert!(
        config.upstream.url.is_none(),
        "the upstream comes from REVGATE_UPSTREAM"
    );
    assert!(
        df.run.contains("REVGATE_UPSTREAM="),
        "the run command sets it"
    );
    Overrides {
        upstream: Some("http://app:3000".into()),
        ..Default::default()
    }
    .apply(&mut config);
    let settings = config.validate().unwrap();
    assert!(expose.contains(&settings.listen.port().to_string()));
    assert!(
        settings.listen.ip().is_unspecified(),
        "reachable through -p"
    );

    // The docs carry the same commands, and no other docker build line.
    let docs: Vec<(String, String)> = ["README.md", "docs/operations.md"]
        .iter()
        .filter_map(|f| Some((f.to_string(), std::fs::read_to_string(root().join(f)).ok()?)))
        .collect();
    assert!(!docs.is_empty(), "no README.md or docs/operations.md");
    let run_line = format!("revgate {}", df.cmd.join(" "));
    for needle in [&df.build, &df.run, &run_line] {
        assert!(
            docs.iter().any(|(_, t)| t.contains(needle.as_str())),
            "the docs do not show {needle:?}"
        );
    }
    for (file, text) in &docs {
        for l in text.lines() {
            let l = l.trim().trim_start_matches("$ ");
            if l.starts_with("docker build") {
                assert_eq!(
                    l, df.build,
                    "{file}: a docker build line differs from the Dockerfile's"
                );
            }
        }
    }
}

#[test]
fn the_load_test_config_is_what_the_docs_say() {
    let text = std::fs::read_to_string(root().join("config/loadtest.toml")).unwrap();
    let config = Config::from_toml(&text).unwrap();
    let settings = config.validate().unwrap();
    assert_eq!(config.store.url, "memory", "embedded store");
    assert!(
        settings
            .dialects
            .iter()
            .all(|d| d.mode == revgate::dialect::RevokeMode::Terminate),
        "terminate mode"
    );
    assert!(
        settings.admin_listen.ip().is_loopback(),
        "admin on loopback"
    );
    assert!(
        config.store.bloom_capacity >= 1_000_000,
        "a large bloom filter"
    );
    assert!(
        config.store.journal.starts_with("target"),
        "a run leaves nothing in the tree"
    );
}
