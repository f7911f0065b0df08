#!/usr/bin/env bash
# benches/principals.sh — issue 12's store figures for credential bindings:
#   * Redis memory per binding (`MEMORY USAGE` of its `bind` key, plus its
#     share of the subject's `subj` set, and of a derived `dtok` key once a
#     scope rule covers it);
#   * a scope revoke of a subject with $N bound credentials: the admin call's
#     answer time (the expansion runs inside it), then the time until every
#     one of them is refused on a second instance (Redis), or on the one
#     instance (embedded store).
# Real processes on loopback: redis-server on a free port, two release
# revgate instances (admin rate limit off), Python's http.client as the
# client. Bounded: N bindings, each wait capped at 60 s.
#
# Usage: benches/principals.sh   (env: N=10000 SKIP_BUILD=1 REVGATE_BIN=...)
set -euo pipefail
N=${N:-10000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ "${SKIP_BUILD:-}" = 1 ] || cargo build --release --quiet
BIN=${REVGATE_BIN:-$ROOT/target/release/revgate}
command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server)" >&2; exit 1; }
exec python3 - "$BIN" "$N" <<'PY'
import http.client, json, os, shutil, socket, subprocess, sys, tempfile, time
bin_, n = sys.argv[1], int(sys.argv[2])
work = tempfile.mkdtemp()
procs = []
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def gateway(name, store):
    toml = os.path.join(work, name + ".toml")
    open(toml, "w").write(f"""[server]\nlisten = "127.0.0.1:0"\n[upstream]\nurl = "http://127.0.0.1:{free()}"\n
[tokens]\nfingerprint_key = "{'ab' * 32}"\n[store]\nkey_prefix = "bench"\n[admin]\nlisten = "127.0.0.1:0"\n
[admin.rate_limit]\nenabled = false\n[revoke]\nmax_scopes_per_subject = 1000\n[log]\naccess_log = false\n""")
    args = [bin_, "run", "--config", toml, "--journal", os.path.join(work, name + ".journal")]
    if store:
        args += ["--store", store]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(os.path.join(work, name + ".log"), "w"))
    procs.append(p)
    line = json.loads(p.stdout.readline())
    return line["listen"], line["admin"]
def conn(addr):
    h, p = addr.rsplit(":", 1); return http.client.HTTPConnection(h, int(p), timeout=60)
def call(c, method, path, body=None, headers=None):
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers or {})
    r = c.getresponse(); data = r.read(); return r.status, data
def ready(admin):
    c = conn(admin); deadline = time.time() + 30
    while time.time() < deadline:
        if call(c, "GET", "/readyz")[0] == 200: return
        time.sleep(0.05)
    raise SystemExit("not ready")
def bind_all(admin, sub):
    c = conn(admin); t = time.time()
    for i in range(n):
        s, d = call(c, "POST", "/admin/v1/principals", {"credential": f"bulk-cred-{sub}-{i:06}", "sub": sub, "issued_at": int(time.time()) - 60},
                    {"content-type": "application/json"})
        assert s == 200, d
    return time.time() - t
def refused_all(listen, sub, deadline, sample=None):
    c = conn(listen); pending = list(sample if sample is not None else range(n)); t = time.time()
    while pending and time.time() < deadline:
        still = []
        for i in pending:
            s, _ = call(c, "GET", "/data", headers={"authorization": f"Bearer bulk-cred-{sub}-{i:06}"})
            if s != 401: still.append(i)
        pending = still
    return time.time() - t, len(pending)
def scope(admin, sub):
    c = conn(admin); t = time.time()
    s, d = call(c, "POST", "/admin/v1/revocations", {"scope": {"sub": sub}}, {"content-type": "application/json"})
    assert s == 200, d
    return time.time() - t
try:
    rport = free()
    rdir = os.path.join(work, "redis"); os.mkdir(rdir)
    procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", rdir],
                                  stdout=subprocess.DEVNULL))
    time.sleep(0.3)
    url = f"redis://127.0.0.1:{rport}"
    a_listen, a_admin = gateway("a", url); b_listen, b_admin = gateway("b", url)
    ready(a_admin); ready(b_admin)
    took = bind_all(a_admin, "bulk-user")
    print(f"| redis | {n} bindings through A's admin API | {took:.2f} s ({n / took:.0f}/s, one keep-alive client) |")
    def redis(*args):
        return subprocess.run(["redis-cli", "-p", str(rport), *args], capture_output=True, text=True).stdout.strip()
    binds = [k for k in redis("--scan", "--pattern", "{bench}:bind:*").split("\n") if k][:200]
    bind_mem = sum(int(redis("MEMORY", "USAGE", k)) for k in binds) / len(binds)
    subj = redis("--scan", "--pattern", "{bench}:subj:*").split("\n")[0]
    subj_mem = int(redis("MEMORY", "USAGE", subj, "SAMPLES", "0")) / n
    print(f"| redis | MEMORY USAGE per binding | bind key {bind_mem:.0f} B + subject set share {subj_mem:.0f} B = {bind_mem + subj_mem:.0f} B |")
    answered = scope(a_admin, "bulk-user")
    # 20 credentials spread over the subject's (the last one included),
    # polled on B until refused: the propagation; then all of them once.
    spread = sorted(set(list(range(0, n, max(1, n // 20))) + [n - 1]))
    enforced, _ = refused_all(b_listen, "bulk-user", time.time() + 60, spread)
    _, left = refused_all(b_listen, "bulk-user", time.time() + 60)
    dtoks = [k for k in redis("--scan", "--pattern", "{bench}:dtok:*").split("\n") if k]
    dtok_mem = sum(int(redis("MEMORY", "USAGE", k)) for k in dtoks[:200]) / max(1, len(dtoks[:200]))
    print(f"| redis | scope revoke of a subject with {n} bound credentials | answered by A in {answered * 1000:.0f} ms; {len(dtoks)} derived rules; "
          f"20 spread over them refused by B {enforced * 1000:.1f} ms after the answer; then all {n} checked on B: {left} not refused |")
    print(f"| redis | MEMORY USAGE per derived rule | {dtok_mem:.0f} B |")
    for p in procs[1:]: p.kill()
    e_listen, e_admin = gateway("e", None)
    took = bind_all(e_admin, "bulk-embedded")
    answered = scope(e_admin, "bulk-embedded")
    enforced, left = refused_all(e_listen, "bulk-embedded", time.time() + 60)
    print(f"| embedded | {n} bindings | {took:.2f} s ({n / took:.0f}/s, each fsync'd) |")
    print(f"| embedded | scope revoke of a subject with {n} bound credentials | answered in {answered * 1000:.0f} ms, enforced when answered; "
          f"{left} of {n} not refused right after |")
finally:
    for p in procs:
        p.kill()
    shutil.rmtree(work, ignore_errors=True)
PY
