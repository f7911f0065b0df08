//! Offline checks of `deploy/`: every Kubernetes manifest validates against
//! the Kubernetes schemas (`kubernetes-validate`, strict, oldest and newest
//! version we support), every revgate config a ConfigMap embeds parses and
//! validates, the pods are wired to their configs (ports, probes, config
//! path, writable journal dir, grace period covering preStop + drain), the
//! selectors select something, and the Dockerfile's build and run commands
//! are the ones the docs show.
//!
//! `kubernetes-validate` comes from PyPI: the test installs it into a venv
//! under the target directory the first time (`python3 -m venv
//! target/kv && target/kv/bin/pip install kubernetes-validate==1.37.0`), and
//! reuses it afterwards. The same venv's PyYAML turns the manifests into
//! JSON (`deploy/tools/manifest_facts.py`), so no YAML crate is needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use revgate::config::{Config, Overrides};
use serde_json::Value;

/// The validator release (and so the schema set) the test installs.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// Kubernetes versions the manifests must validate against: the oldest we
/// claim to support and the newest the validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];
/// What a pod's grace period must leave beyond preStop + drain.
const GRACE_SLACK: u64 = 5;

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

/// The venv holding kubernetes-validate (and PyYAML), installed on first use.
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = target_dir().join("kv");
        let validator = dir.join("bin").join("kubernetes-validate");
        if !validator.exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&dir));
            run(Command::new(dir.join("bin").join("pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                KUBERNETES_VALIDATE,
            ]));
        }
        assert!(
            validator.exists(),
            "{} missing after install",
            validator.display()
        );
        dir
    })
}

/// Every `*.yaml` under deploy/kubernetes, sorted.
fn manifests() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("deploy/kubernetes"), &mut out);
    out.sort();
    out
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

/// Every document of every manifest, as JSON.
fn docs() -> &'static [(PathBuf, Value)] {
    static DOCS: OnceLock<Vec<(PathBuf, Value)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let out = run(Command::new(venv().join("bin").join("python"))
            .arg(root().join("deploy/tools/manifest_facts.py"))
            .args(manifests()));
        let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        all.into_iter()
            .map(|v| (PathBuf::from(v["file"].as_str().unwrap()), v["doc"].clone()))
            .collect()
    })
}

fn kind<'a>(kind: &'a str) -> impl Iterator<Item = &'static (PathBuf, Value)> + 'a {
    docs().iter().filter(move |(_, d)| d["kind"] == kind)
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap()
}

/// The revgate configs embedded in ConfigMaps, by ConfigMap name.
fn embedded_configs() -> BTreeMap<String, Config> {
    let mut out = BTreeMap::new();
    for (file, doc) in kind("ConfigMap") {
        let Some(data) = doc["data"].as_object() else {
            continue;
        };
        for (key, text) in data {
            if !key.ends_with(".toml") {
                continue;
            }
            let text = text.as_str().unwrap();
            let config = Config::from_toml(text).unwrap_or_else(|e| {
                panic!("{}: ConfigMap {} key {key}: {e}", file.display(), name(doc))
            });
            out.insert(name(doc).to_string(), config);
        }
    }
    out
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
    c
}

fn pods() -> impl Iterator<Item = (&'static PathBuf, &'static str, &'static Value)> {
    docs()
        .iter()
        .filter(|(_, d)| {
            matches!(
                d["kind"].as_str(),
                Some("Deployment" | "StatefulSet" | "DaemonSet")
            )
        })
        .map(|(f, d)| (f, name(d), &d["spec"]["template"]))
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
fn manifests_validate_against_kubernetes_schemas() {
    let files = manifests();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    for want in [
        "deploy/kubernetes/sidecar.yaml",
        "deploy/kubernetes/redis.yaml",
        "deploy/kubernetes/ingress/deployment.yaml",
        "deploy/kubernetes/ingress/service.yaml",
        "deploy/kubernetes/ingress/configmap.yaml",
        "deploy/kubernetes/ingress/pdb.yaml",
        "deploy/kubernetes/ingress/hpa.yaml",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for version in KUBERNETES_VERSIONS {
        let (ok, out) = validate(version, &files);
        assert!(ok, "manifests do not validate against {version}:\n{out}");
    }

    // The validator really validates: a broken manifest and an unknown kind fail.
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
    assert!(!validate(KUBERNETES_VERSIONS[0], &[bad]).0);
}

#[test]
fn embedded_configs_parse_and_validate() {
    let configs = embedded_configs();
    assert!(
        configs.len() >= 2,
        "sidecar and ingress configs: {configs:?}"
    );
    for (name, config) in &configs {
        as_deployed(config)
            .validate()
            .unwrap_or_else(|e| panic!("ConfigMap {name}: {e}"));
    }
}

#[test]
fn pods_are_wired_to_their_configs() {
    let configs = embedded_configs();
    let cmd = dockerfile().cmd;
    let mut revgate_pods = 0;
    for (file, workload, pod) in pods() {
        let at = format!("{}: {workload}", file.display());
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
            .get(cm_name)
            .unwrap_or_else(|| panic!("{at}: ConfigMap {cm_name} not in deploy/"));
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
            kind("ConfigMap").any(|(_, d)| name(d) == cm_name && d["data"][file_name].is_string()),
            "{at}: ConfigMap {cm_name} has no key {file_name}"
        );

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
    assert!(revgate_pods >= 2, "sidecar and ingress pods");
}

#[test]
fn selectors_and_references_resolve() {
    let templates: Vec<&Value> = pods().map(|(_, _, pod)| pod).collect();
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

    for (_, svc) in kind("Service") {
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
        for (_, d) in kind(k) {
            let sel = if k == "NetworkPolicy" {
                &d["spec"]["podSelector"]["matchLabels"]
            } else {
                &d["spec"]["selector"]["matchLabels"]
            };
            assert!(!selects(sel).is_empty(), "{k} {} selects no pod", name(d));
        }
    }
    for (_, hpa) in kind("HorizontalPodAutoscaler") {
        let target = &hpa["spec"]["scaleTargetRef"];
        assert!(
            kind(target["kind"].as_str().unwrap()).any(|(_, d)| name(d) == target["name"]),
            "HPA {} targets a missing {}",
            name(hpa),
            target["name"]
        );
        assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    }
    for (_, pdb) in kind("PodDisruptionBudget") {
        // maxUnavailable 1 with the HPA's minimum leaves someone serving.
        assert_eq!(pdb["spec"]["maxUnavailable"], 1, "PDB {}", name(pdb));
    }
    for (_, workload, pod) in pods() {
        for v in pod["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                assert!(
                    kind("ConfigMap").any(|(_, d)| name(d) == cm),
                    "{workload}: ConfigMap {cm} not in deploy/"
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
