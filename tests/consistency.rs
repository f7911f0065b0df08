//! Confirmed consistency and durable acknowledgement, with real processes:
//! revgate gateways (the binary) on real redis-server processes, a real
//! upstream whose record proves what reached it.
//!
//! Covered: three instances in `store.consistency = "confirmed"`, over a
//! thousand revocations through A (RFC 7009 endpoint and admin API), each
//! followed at once by the token on B and C: none reaches the upstream; an
//! instance paused with SIGSTOP, then one cut off from Redis by a TCP relay:
//! the revoke still answers 200 (it did not wait out `confirm_timeout`),
//! and the instance answers 401 or 503, never 200, for that token until it
//! caught up; an instance that holds a lease but never applies: the revoke
//! answers the dialect's 503 and the revocation stands; an instance that
//! cannot reach Redis is fenced (503 + `Retry-After` to credentialed
//! requests only); `store.redis.min_replicas_acked` against a real replica:
//! acknowledged revocations are on the replica, and a stopped replica turns
//! the answer into 503 with the rule still on the primary; a Sentinel
//! fail-over (SIGKILL of the primary) in the middle of a revoke burst, with
//! and without `min_replicas_acked`; Redis Cluster (three masters through
//! `redis+cluster://`): every key of the deployment on one node, revocations
//! propagated, and the node holding them restarted.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use redis_support::{RedisCluster, RedisServer, TcpRelay};

const FP_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const PREFIX: &str = "cgw";
/// The RFC 7009 dialect's 503 body.
const RFC7009_UNAVAILABLE: &str = r#"{"error":"temporarily_unavailable"}"#;
/// The revoke rate limits off: the tests revoke faster than a client should.
const NO_RATE_LIMITS: &str =
    "[revoke.rate_limit]\nenabled = false\n[admin.rate_limit]\nenabled = false\n";
/// The body of a fenced instance's 503.
const FENCED_BODY: &str = r#"{"error":"temporarily_unavailable","error_description":"This instance is catching up with revocations; retry"}"#;

/// A confirmed-mode gateway on `store`, RFC 7009 terminated at the gateway,
/// a 1 s lease; the mode from the flag, or from the environment when
/// `by_env`.
fn confirmed(store: &str, upstream: &str, by_env: bool) -> support::RunningGateway {
    let g = confirmed_gateway(store, upstream, "terminate");
    let g = if by_env {
        g.env("REVGATE_CONSISTENCY", "confirmed")
    } else {
        g.arg("--consistency").arg("confirmed")
    };
    g.spawn()
}

/// A confirmed-mode gateway whose revoke endpoints run in `mode`.
fn confirmed_with(store: &str, upstream: &str, mode: &str) -> support::RunningGateway {
    confirmed_gateway(store, upstream, mode)
        .arg("--consistency")
        .arg("confirmed")
        .spawn()
}

fn confirmed_gateway(store: &str, upstream: &str, mode: &str) -> support::Gateway {
    support::Gateway::new()
        .upstream(upstream)
        .arg("--store")
        .arg(store)
        .arg("--revoke-mode")
        .arg(mode)
        .toml(&format!(
            "[tokens]\nfingerprint_key = \"{FP_KEY}\"\n{NO_RATE_LIMITS}[store]\nkey_prefix = \"{PREFIX}\"\nlease = \"1s\"\nconfirm_timeout = \"4s\""
        ))
}

async fn ready(g: &support::RunningGateway) {
    let url = format!("{}/readyz", g.admin_url);
    support::wait_for("gateway /readyz 200", Duration::from_secs(20), || async {
        support::send(support::get(&url).body(Default::default()).unwrap())
            .await
            .status
            == 200
    })
    .await;
}

/// Waits until `g` holds its lease: a credentialed request passes.
async fn serving(g: &support::RunningGateway) {
    ready(g).await;
    let url = format!("{}/probe", g.url);
    support::wait_for(
        "the gateway holds its lease",
        Duration::from_secs(20),
        || async { support::get_bearer(&url, "probe-token").await.status == 200 },
    )
    .await;
}

/// Revokes `token` through `g`'s RFC 7009 endpoint; the answer.
async fn rfc7009_revoke(g: &support::RunningGateway, token: &str) -> support::Got {
    support::send(
        http::Request::builder()
            .method("POST")
            .uri(format!("{}/oauth/revoke", g.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!("token={token}"))))
            .unwrap(),
    )
    .await
}

/// Requests that reached the upstream carrying `token`.
fn reached(up: &support::RunningUpstream, token: &str) -> usize {
    let bearer = format!("Bearer {token}");
    up.all()
        .iter()
        .filter(|r| {
            r.headers
                .get("authorization")
                .is_some_and(|v| v.as_bytes() == bearer.as_bytes())
        })
        .count()
}

/// `g` answers `token` with 401 or 503 (never anything else) until it
/// answers 401: it caught up. Returns how many 503s it gave first.
async fn refused_until_caught_up(g: &support::RunningGateway, token: &str) -> usize {
    let url = format!("{}/after", g.url);
    let mut fenced = 0;
    for _ in 0..1000 {
        let r = support::get_bearer(&url, token).await;
        match r.status {
            401 => {
                support::assert_revoked_response(&r);
                return fenced;
            }
            503 => {
                assert_eq!(r.text(), FENCED_BODY);
                assert_eq!(r.header("retry-after"), Some("1"));
                fenced += 1;
            }
            other => panic!("a revoked token got {other}: {}", r.text()),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the instance never caught up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_revoke_is_enforced_by_every_instance_the_moment_it_is_answered() {
    let redis = RedisServer::spawn();
    let up = support::Upstream::new().spawn().await;
    let a = confirmed(&redis.url(), &up.url, false);
    let b = confirmed(&redis.url(), &up.url, true);
    let c = confirmed(&redis.url(), &up.url, false);
    for g in [&a, &b, &c] {
        serving(g).await;
    }
    let hits_before = up.hits();
    let mut passed_before = 0;
    for i in 0..1_050 {
        let token = format!("confirmed-token-{i}");
        // Every tenth token is seen by B first: its "not revoked" answer
        // may be cached there, and the revocation must clear it.
        if i % 10 == 0 {
            let r = support::get_bearer(&format!("{}/before", b.url), &token).await;
            assert_eq!(r.status, 200, "{}", r.text());
            passed_before += 1;
        }
        if i % 7 == 0 {
            support::admin_revoke(&a, &token).await;
        } else {
            let r = rfc7009_revoke(&a, &token).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        for g in [&b, &c] {
            let r = support::get_bearer(&format!("{}/after", g.url), &token).await;
            support::assert_revoked_response(&r);
        }
    }
    assert_eq!(
        up.hits() - hits_before,
        passed_before,
        "a revoked token reached the upstream after its revoke was answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_instance_does_not_block_the_revoke_and_is_fenced_when_it_resumes() {
    let redis = RedisServer::spawn();
    let up = support::Upstream::new().spawn().await;
    let a = confirmed(&redis.url(), &up.url, false);
    let c = confirmed(&redis.url(), &up.url, false);
    serving(&a).await;
    serving(&c).await;
    let token = "paused-instance-token";
    let r = support::get_bearer(&format!("{}/before", c.url), token).await;
    assert_eq!(r.status, 200);

    c.signal("STOP");
    // Answered 200, not the 503 of `confirm_timeout` (4 s): C was counted
    // fenced once its 1 s lease expired.
    let r = rfc7009_revoke(&a, token).await;
    c.signal("CONT");
    assert_eq!(r.status, 200, "{}", r.text());
    let fenced = refused_until_caught_up(&c, token).await;
    assert_eq!(reached(&up, token), 1, "only the request before the revoke");
    println!("after SIGCONT: {fenced} fenced answers before 401");
    // And it serves again once caught up.
    serving(&c).await;
    assert!(
        c.logs().contains("the lease ran out before it was renewed"),
        "{}",
        c.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_redis_does_not_block_the_revoke_and_is_fenced_until_back() {
    let redis = RedisServer::spawn();
    let relay = TcpRelay::spawn(redis.port()).await;
    let up = support::Upstream::new().spawn().await;
    let a = confirmed(&redis.url(), &up.url, false);
    let c = confirmed(&relay.url(), &up.url, false);
    serving(&a).await;
    serving(&c).await;
    let token = "cut-off-instance-token";

    relay.cut();
    let r = rfc7009_revoke(&a, token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Cut off, C never learns the revocation: it must be fenced by now.
    let r = support::get_bearer(&format!("{}/cut", c.url), token).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.text(), FENCED_BODY);
    // Without a credential there is nothing to judge: it passes.
    let r = support::fetch(&format!("{}/anonymous", c.url), &[]).await;
    assert_eq!(r.status, 200);
    // And its readiness probe sends traffic elsewhere meanwhile.
    let r = support::fetch(&format!("{}/readyz", c.admin_url), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.text(), r#"{"status":"not_ready"}"#);

    relay.restore();
    refused_until_caught_up(&c, token).await;
    assert_eq!(reached(&up, token), 0);
    assert!(
        c.logs().contains("the lease ran out before it was renewed"),
        "{}",
        c.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_instance_that_never_applies_turns_the_revoke_into_503_and_the_revocation_stands() {
    let redis = RedisServer::spawn();
    let up = support::Upstream::new().spawn().await;
    let a = confirmed(&redis.url(), &up.url, false);
    let b = confirmed(&redis.url(), &up.url, false);
    serving(&a).await;
    serving(&b).await;
    // A member whose lease stays live and whose applied position never
    // moves: an instance stuck with its lease renewed (as a bug would
    // leave one). Written the way a member writes itself.
    let mut conn = redis.conn();
    let far = (support::now() + 3600) * 1000;
    let () = redis::cmd("ZADD")
        .arg(format!("{{{PREFIX}}}:leases"))
        .arg(far)
        .arg("stuck-member")
        .query(&mut conn)
        .unwrap();
    let token = "unconfirmed-token";
    let r = rfc7009_revoke(&a, token).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.text(), RFC7009_UNAVAILABLE);
    // Recorded all the same: in Redis, and enforced by B.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{PREFIX}}}:tok:*"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    for g in [&a, &b] {
        let r = support::get_bearer(&format!("{}/x", g.url), token).await;
        support::assert_revoked_response(&r);
    }
    // The admin API says the same in its own format.
    let r = support::post_json(
        &format!("{}/admin/v1/revocations", a.admin_url),
        &serde_json::json!({ "token": "unconfirmed-admin-token" }),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    // Forwarding, the upstream's 2xx is not passed on as the answer.
    let f = confirmed_with(&redis.url(), &up.url, "forward");
    serving(&f).await;
    let hits = up.hits();
    let r = rfc7009_revoke(&f, "unconfirmed-forwarded-token").await;
    assert_eq!(up.hits(), hits + 1, "the revoke call was forwarded");
    assert_eq!(up.last().unwrap().uri, "/oauth/revoke");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.text(), RFC7009_UNAVAILABLE);
    support::assert_revoked(&b, &up, "unconfirmed-forwarded-token").await;

    // The stuck member gone, a retry is confirmed (and changes nothing).
    let () = redis::cmd("ZREM")
        .arg(format!("{{{PREFIX}}}:leases"))
        .arg("stuck-member")
        .query(&mut conn)
        .unwrap();
    let r = rfc7009_revoke(&a, token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(reached(&up, token), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_cannot_reach_redis_is_fenced() {
    let redis = RedisServer::spawn();
    let relay = TcpRelay::spawn(redis.port()).await;
    relay.cut();
    let up = support::Upstream::new().spawn().await;
    let c = confirmed(&relay.url(), &up.url, false);
    let r = support::get_bearer(&format!("{}/x", c.url), "any-token").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.text(), FENCED_BODY);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(up.hits(), 0);
    // A revoke is recorded in the outbox, but cannot be confirmed: 503.
    let r = rfc7009_revoke(&c, "outboxed-token").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.text(), RFC7009_UNAVAILABLE);
    relay.restore();
    serving(&c).await;
    let r = support::get_bearer(&format!("{}/x", c.url), "outboxed-token").await;
    support::assert_revoked_response(&r);
}

fn eventual_with_replicas(store: &str, upstream: &str, replicas: u32) -> support::RunningGateway {
    support::Gateway::new()
        .upstream(upstream)
        .arg("--store")
        .arg(store)
        .arg("--revoke-mode")
        .arg("terminate")
        .toml(&format!(
            "[tokens]\nfingerprint_key = \"{FP_KEY}\"\n{NO_RATE_LIMITS}[store]\nkey_prefix = \"{PREFIX}\"\n[store.redis]\nmin_replicas_acked = {replicas}\nwait_timeout = \"300ms\"\nwait_aof = true"
        ))
        .spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_replicas_acked_waits_for_the_replica_and_answers_503_without_it() {
    let primary = RedisServer::spawn();
    let mut replica = RedisServer::builder().replica_of(primary.port()).spawn();
    let mut rconn = replica.conn();
    support::wait_for("the replica in sync", Duration::from_secs(20), async || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut rconn)
            .unwrap();
        info.contains("master_link_status:up")
    })
    .await;
    let up = support::Upstream::new().spawn().await;
    let g = eventual_with_replicas(&primary.url(), &up.url, 1);
    ready(&g).await;
    // Acknowledged means on the replica: read it there right after the 200.
    for i in 0..20 {
        let token = format!("replicated-token-{i}");
        let r = rfc7009_revoke(&g, &token).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let n: usize = redis::cmd("KEYS")
        .arg(format!("{{{PREFIX}}}:tok:*"))
        .query::<Vec<String>>(&mut rconn)
        .unwrap()
        .len();
    assert_eq!(n, 20, "every acknowledged revocation is on the replica");
    // WAITAOF needs Redis 7.2: on an older server the gateway said so once.
    let version: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut primary.conn())
        .unwrap();
    if version.contains("redis_version:7.0") || version.contains("redis_version:7.1") {
        assert!(g.logs().contains("needs Redis >= 7.2"), "{}", g.logs());
    }

    replica.kill();
    let r = rfc7009_revoke(&g, "unreplicated-token").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.text(), RFC7009_UNAVAILABLE);
    // On the primary all the same, and enforced.
    let n: usize = redis::cmd("KEYS")
        .arg(format!("{{{PREFIX}}}:tok:*"))
        .query::<Vec<String>>(&mut primary.conn())
        .unwrap()
        .len();
    assert_eq!(n, 21);
    let r = support::get_bearer(&format!("{}/x", g.url), "unreplicated-token").await;
    support::assert_revoked_response(&r);
    assert_eq!(up.hits(), 0);
}

/// A primary, two replicas and three sentinels; two gateways on the
/// sentinel URL revoking continuously (RFC 7009, one revoker each); the
/// primary killed with SIGKILL after `before` acknowledgements each. After
/// the fail-over and `after` more each: the acknowledged revocations that
/// the new primary, or either gateway, does not enforce. With `synced`
/// false the burst starts while the replicas are still in their first sync
/// (Redis 7's diskless sync waits 5 s for more replicas): the case of a
/// replica that has just (re)joined, where a primary acknowledges what no
/// replica has.
async fn sentinel_burst(
    min_replicas_acked: u32,
    synced: bool,
    before: usize,
    after: usize,
) -> (usize, usize) {
    const MASTER: &str = "revgate-burst";
    let mut primary = RedisServer::spawn();
    let replicas: Vec<RedisServer> = (0..2)
        .map(|_| RedisServer::builder().replica_of(primary.port()).spawn())
        .collect();
    let sentinels: Vec<RedisServer> = (0..3)
        .map(|_| {
            RedisServer::builder()
                .sentinel(MASTER, primary.port())
                .spawn()
        })
        .collect();
    for r in replicas.iter().filter(|_| synced) {
        let mut rconn = r.conn();
        support::wait_for(
            "the replicas in sync",
            Duration::from_secs(30),
            async || {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut rconn)
                    .unwrap();
                info.contains("master_link_status:up")
            },
        )
        .await;
    }
    let mut sconn = sentinels[0].conn();
    support::wait_for("topology settles", Duration::from_secs(30), async || {
        let others: Vec<redis::Value> = redis::cmd("SENTINEL")
            .arg("sentinels")
            .arg(MASTER)
            .query(&mut sconn)
            .unwrap();
        let known: Vec<redis::Value> = redis::cmd("SENTINEL")
            .arg("replicas")
            .arg(MASTER)
            .query(&mut sconn)
            .unwrap();
        others.len() == 2 && known.len() == 2
    })
    .await;
    let url = format!(
        "redis+sentinel://{}/{MASTER}",
        sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect::<Vec<_>>()
            .join(",")
    );
    let up = support::Upstream::new().spawn().await;
    let gws: Vec<_> = (0..2)
        .map(|_| eventual_with_replicas(&url, &up.url, min_replicas_acked))
        .collect();
    for g in &gws {
        ready(g).await;
    }
    let killed = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut revokers = Vec::new();
    for (w, g) in gws.iter().enumerate() {
        let url = g.url.clone();
        let killed = killed.clone();
        revokers.push(tokio::spawn(async move {
            let c = support::client();
            let mut acked = Vec::new();
            let (mut i, mut after_kill) = (0usize, None::<usize>);
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            while std::time::Instant::now() < deadline {
                let token = format!("burst-{w}-{i}");
                i += 1;
                let req = http::Request::builder()
                    .method("POST")
                    .uri(format!("{url}/oauth/revoke"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(format!("token={token}"))))
                    .unwrap();
                let r = support::send_with(&c, req).await;
                if r.status == 200 {
                    acked.push(token);
                } else {
                    assert_eq!(r.status, 503, "{}", r.text());
                    assert_eq!(r.text(), RFC7009_UNAVAILABLE);
                }
                if acked.len() == before {
                    killed.notify_one();
                }
                match after_kill {
                    None if acked.len() > before => after_kill = Some(acked.len()),
                    Some(n) if acked.len() >= n + after => break,
                    _ => {}
                }
            }
            acked
        }));
    }
    // The first revoker to reach `before` acknowledgements triggers the kill.
    killed.notified().await;
    primary.kill();
    let mut acked = Vec::new();
    for r in revokers {
        acked.extend(r.await.unwrap());
    }
    assert!(
        acked.len() >= 2 * before,
        "the burst went on through the fail-over: {} acknowledged",
        acked.len()
    );
    // Both gateways have followed the fail-over once a marker revoked now
    // reaches both.
    let marker = "burst-marker";
    support::wait_for(
        "a marker is acknowledged",
        Duration::from_secs(30),
        async || rfc7009_revoke(&gws[0], marker).await.status == 200,
    )
    .await;
    for g in &gws {
        let url = format!("{}/m", g.url);
        support::wait_for(
            "the marker reaches both",
            Duration::from_secs(30),
            async || support::get_bearer(&url, marker).await.status == 401,
        )
        .await;
    }
    let mut lost_on_gateways = 0;
    for token in &acked {
        for g in &gws {
            let r = support::get_bearer(&format!("{}/check", g.url), token).await;
            if r.status != 401 {
                lost_on_gateways += 1;
            }
        }
    }
    // And in the new primary, by key count (fingerprints are keyed hashes).
    let (_, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER)
        .query(&mut sconn)
        .unwrap();
    let new_primary = replicas.iter().find(|r| r.port() == port).unwrap();
    let keys: usize = redis::cmd("KEYS")
        .arg(format!("{{{PREFIX}}}:tok:*"))
        .query::<Vec<String>>(&mut new_primary.conn())
        .unwrap()
        .len();
    // Every acknowledged token, and the marker, is a key.
    let missing_in_redis = (acked.len() + 1).saturating_sub(keys);
    println!(
        "sentinel burst, min_replicas_acked = {min_replicas_acked}, replicas synced first: {synced}: {} acknowledged, {lost_on_gateways} answers not 401, {missing_in_redis} missing in the new primary",
        acked.len()
    );
    (lost_on_gateways, missing_in_redis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_min_replicas_acked_a_sentinel_fail_over_mid_burst_loses_no_acknowledged_revocation() {
    // Replicas still syncing: without `WAIT` most of the burst before the
    // kill is lost (296 of 402 in one run); with it, none.
    let (lost, missing) = sentinel_burst(1, false, 150, 50).await;
    assert_eq!(
        lost, 0,
        "acknowledged revocations not enforced after the fail-over"
    );
    assert_eq!(
        missing, 0,
        "acknowledged revocations missing in the new primary"
    );
}

/// The same burst without `WAIT`: what a fail-over loses is reported (it
/// depends on what the dead primary had not yet sent; on loopback usually
/// nothing), and the burst and fail-over themselves must go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_min_replicas_acked_a_sentinel_fail_over_mid_burst_is_followed_and_its_losses_reported(
) {
    for synced in [true, false] {
        let (lost, missing) = sentinel_burst(0, synced, 150, 50).await;
        println!(
            "without WAIT, replicas synced first: {synced}: {lost} gateway answers not 401, {missing} revocations missing in the new primary"
        );
    }
}

/// `redis+cluster://` gateway.
fn on_cluster(url: &str, upstream: &str) -> support::RunningGateway {
    support::Gateway::new()
        .upstream(upstream)
        .arg("--store")
        .arg(url)
        .arg("--revoke-mode")
        .arg("terminate")
        .toml(&format!(
            "[tokens]\nfingerprint_key = \"{FP_KEY}\"\n{NO_RATE_LIMITS}[store]\nkey_prefix = \"{PREFIX}\""
        ))
        .spawn()
}

/// How many keys each node holds.
fn keys_per_node(cluster: &RedisCluster) -> Vec<i64> {
    cluster
        .nodes
        .iter()
        .map(|n| redis::cmd("DBSIZE").query(&mut n.conn()).unwrap())
        .collect()
}

async fn rejected_by(g: &support::RunningGateway, token: &str) {
    let url = format!("{}/c", g.url);
    support::wait_for(
        "the revocation reaches the gateway",
        Duration::from_secs(20),
        async || support::get_bearer(&url, token).await.status == 401,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_revocations_propagate_and_survive_a_restart_of_their_master() {
    let mut cluster = RedisCluster::spawn(3);
    let up = support::Upstream::new().spawn().await;
    let a = on_cluster(&cluster.url(), &up.url);
    let b = on_cluster(&cluster.url(), &up.url);
    ready(&a).await;
    ready(&b).await;
    let r = rfc7009_revoke(&a, "cluster-token-1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    rejected_by(&b, "cluster-token-1").await;
    support::assert_revoked(&a, &up, "cluster-token-1").await;
    // One deployment is one slot: all its keys on one node.
    let per_node = keys_per_node(&cluster);
    let holders: Vec<usize> = (0..per_node.len()).filter(|&i| per_node[i] > 0).collect();
    assert_eq!(holders.len(), 1, "keys per node: {per_node:?}");
    let holder = holders[0];

    // Restart the node that holds them (AOF): while it is down revocations
    // go to the outbox; once it is back the cluster client finds it again.
    cluster.nodes[holder].stop();
    let r = rfc7009_revoke(&a, "cluster-token-2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    support::assert_revoked(&a, &up, "cluster-token-2").await;
    cluster.nodes[holder].start();
    cluster.wait_ok();
    rejected_by(&b, "cluster-token-2").await;
    let r = rfc7009_revoke(&b, "cluster-token-3").await;
    assert_eq!(r.status, 200, "{}", r.text());
    rejected_by(&a, "cluster-token-3").await;
    for g in [&a, &b] {
        for t in ["cluster-token-1", "cluster-token-2", "cluster-token-3"] {
            support::assert_revoked(g, &up, t).await;
        }
    }
    let per_node = keys_per_node(&cluster);
    assert!(
        per_node[holder] >= 4,
        "three rules and the stream: {per_node:?}"
    );
    assert_eq!(
        per_node.iter().sum::<i64>(),
        per_node[holder],
        "{per_node:?}"
    );
    assert_eq!(reached(&up, "cluster-token-1"), 0);

    // Confirmed mode on the cluster: the lease scripts run in the slot too.
    let c1 = confirmed(&cluster.url(), &up.url, false);
    let c2 = confirmed(&cluster.url(), &up.url, false);
    serving(&c1).await;
    serving(&c2).await;
    for i in 0..20 {
        let token = format!("cluster-confirmed-{i}");
        let r = rfc7009_revoke(&c1, &token).await;
        assert_eq!(r.status, 200, "{}", r.text());
        support::assert_revoked(&c2, &up, &token).await;
    }
}
