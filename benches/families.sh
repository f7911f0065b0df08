#!/usr/bin/env bash
# benches/families.sh — issue 13's figures for token families:
#   * a family revoke of a family with $N members (`{"token":..,"family":true}`
#     through A's admin API): its answer time, then the time until every
#     member is refused on three instances sharing one Redis (and on the one
#     instance of the embedded store);
#   * Redis memory per family member (`MEMORY USAGE` of its `fmem` key plus
#     its share of the family's `fam` hash, and of the `tok` key the revoke
#     gives it);
#   * a token endpoint's added latency: $M sequential token requests
#     through revgate with `identity.learn_from_issuance` on (the request and
#     the answer read whole, two family members recorded per answer) and off
#     (streamed through), p50/p99, embedded store.
# Real processes on loopback: redis-server on a free port, release revgate
# instances (admin rate limit off), a small Python token endpoint
# (keep-alive), Python's http.client as the client. Bounded: N members, M
# requests, each wait capped at 60 s.
#
# Usage: benches/families.sh   (env: N=1000 M=2000 SKIP_BUILD=1 REVGATE_BIN=...)
set -euo pipefail
N=${N:-1000}
M=${M:-2000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ "${SKIP_BUILD:-}" = 1 ] || cargo build --release --quiet
BIN=${REVGATE_BIN:-$ROOT/target/release/revgate}
command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server)" >&2; exit 1; }
exec python3 - "$BIN" "$N" "$M" <<'PY'
import http.client, http.server, json, os, shutil, socket, subprocess, sys, tempfile, threading, time
bin_, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
work = tempfile.mkdtemp()
procs = []
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

class Token(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count = 0
    def setup(self):
        super().setup()
        # Head and body are written separately: without this, Nagle and
        # delayed ACKs add 40 ms to every answer.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Token.count += 1
        body = json.dumps({"access_token": f"lat-at-{Token.count}", "token_type": "Bearer", "expires_in": 3600,
                           "refresh_token": f"lat-rt-{Token.count}"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass

def gateway(name, store, extra=""):
    toml = os.path.join(work, name + ".toml")
    open(toml, "w").write(f"""[server]\nlisten = "127.0.0.1:0"\n[upstream]\nurl = "http://127.0.0.1:{token_port}"\n
[tokens]\nfingerprint_key = "{'cd' * 32}"\n[store]\nkey_prefix = "bench"\n[admin]\nlisten = "127.0.0.1:0"\n
[admin.rate_limit]\nenabled = false\n[log]\naccess_log = false\n{extra}""")
    args = [bin_, "run", "--config", toml, "--journal", os.path.join(work, name + ".journal")]
    if store:
        args += ["--store", store]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(os.path.join(work, name + ".log"), "w"))
    procs.append(p)
    line = json.loads(p.stdout.readline())
    return line["listen"], line["admin"]
def conn(addr):
    h, p = addr.rsplit(":", 1); return http.client.HTTPConnection(h, int(p), timeout=60)
def call(c, method, path, body=None, headers=None, raw=None):
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    c.request(method, path, body=data, headers=headers or {})
    r = c.getresponse(); out = r.read(); return r.status, out
def ready(admin):
    c = conn(admin); deadline = time.time() + 30
    while time.time() < deadline:
        if call(c, "GET", "/readyz")[0] == 200: return
        time.sleep(0.05)
    raise SystemExit("not ready")
def family(admin, tag):
    c = conn(admin); t = time.time()
    for i in range(n):
        s, d = call(c, "POST", "/admin/v1/principals", {"credential": f"fam-{tag}-{i:05}", "sub": "fam-user", "family": f"grant-{tag}"},
                    {"content-type": "application/json"})
        assert s == 200, d
    return time.time() - t
def revoke(admin, tag):
    c = conn(admin); t = time.time()
    s, d = call(c, "POST", "/admin/v1/revocations", {"token": f"fam-{tag}-00000", "family": True}, {"content-type": "application/json"})
    assert s == 200, d
    return time.time() - t
def refused_all(listen, tag, deadline, sample=None):
    c = conn(listen); pending = list(sample if sample is not None else range(n)); t = time.time()
    while pending and time.time() < deadline:
        still = []
        for i in pending:
            s, _ = call(c, "GET", "/data", headers={"authorization": f"Bearer fam-{tag}-{i:05}"})
            if s != 401: still.append(i)
        pending = still
    return time.time() - t, len(pending)
def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(len(xs) * p))]
def latency(listen):
    c = conn(listen); out = []
    for i in range(m):
        t = time.perf_counter()
        s, d = call(c, "POST", "/oauth/token", raw=b"grant_type=authorization_code&code=c",
                    headers={"content-type": "application/x-www-form-urlencoded"})
        out.append(time.perf_counter() - t)
        assert s == 200, d
    return pct(out, 0.5) * 1000, pct(out, 0.99) * 1000
try:
    token_port = free()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", token_port), Token)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    rport = free()
    rdir = os.path.join(work, "redis"); os.mkdir(rdir)
    procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", rdir],
                                  stdout=subprocess.DEVNULL))
    time.sleep(0.3)
    url = f"redis://127.0.0.1:{rport}"
    gws = [gateway(x, url) for x in "abc"]
    for _, admin in gws: ready(admin)
    took = family(gws[0][1], "r")
    print(f"| redis | {n} members of one family through A's admin API | {took:.2f} s ({n / took:.0f}/s, one keep-alive client) |")
    def redis(*args):
        return subprocess.run(["redis-cli", "-p", str(rport), *args], capture_output=True, text=True).stdout.strip()
    mems = [k for k in redis("--scan", "--pattern", "{bench}:fmem:*").split("\n") if k][:200]
    fmem = sum(int(redis("MEMORY", "USAGE", k)) for k in mems) / len(mems)
    fam = redis("--scan", "--pattern", "{bench}:fam:*").split("\n")[0]
    fam_share = int(redis("MEMORY", "USAGE", fam, "SAMPLES", "0")) / n
    print(f"| redis | MEMORY USAGE per family member | fmem key {fmem:.0f} B + family hash share {fam_share:.0f} B = {fmem + fam_share:.0f} B |")
    answered = revoke(gws[0][1], "r")
    spread = sorted(set(list(range(0, n, max(1, n // 20))) + [n - 1]))
    for name, (listen, _) in zip("ABC", gws):
        enforced, _ = refused_all(listen, "r", time.time() + 60, spread)
        _, left = refused_all(listen, "r", time.time() + 60)
        print(f"| redis | family revoke of {n} members answered by A in {answered * 1000:.1f} ms | 20 spread members refused by {name} "
              f"{enforced * 1000:.1f} ms after the answer; all {n} checked on {name}: {left} not refused |")
    toks = [k for k in redis("--scan", "--pattern", "{bench}:tok:*").split("\n") if k][:200]
    tok = sum(int(redis("MEMORY", "USAGE", k)) for k in toks) / max(1, len(toks))
    print(f"| redis | MEMORY USAGE per revoked member's token rule | {tok:.0f} B |")
    events = redis("XLEN", "{bench}:events")
    print(f"| redis | stream events for the family revoke and {n} joins | {events} (one for the revoke: joins publish none) |")
    for p in procs[1:]: p.kill()
    e_listen, e_admin = gateway("e", None)
    took = family(e_admin, "e")
    answered = revoke(e_admin, "e")
    _, left = refused_all(e_listen, "e", time.time() + 60)
    print(f"| embedded | {n} members of one family | {took:.2f} s ({n / took:.0f}/s, each fsync'd) |")
    print(f"| embedded | family revoke of {n} members | answered in {answered * 1000:.1f} ms, enforced when answered: {left} of {n} not refused right after |")
    procs[-1].kill()
    on = gateway("lat-on", None)
    off = gateway("lat-off", None, "[identity]\nlearn_from_issuance = false\n")
    for _ in range(2):
        for name, (listen, _) in (("on", on), ("off", off)):
            p50, p99 = latency(listen)
            print(f"| embedded | POST /oauth/token, learning {name} ({m} sequential requests) | p50 {p50:.3f} ms, p99 {p99:.3f} ms |")
finally:
    for p in procs:
        p.kill()
    shutil.rmtree(work, ignore_errors=True)
PY
