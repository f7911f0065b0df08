//! One connection type for a single Redis (standalone or the master Sentinel
//! names) and for Redis Cluster, so the store's code is the same for both.
//!
//! Cluster goes through redis-rs's cluster client (`redis+cluster://`): it
//! learns the slot map, follows `MOVED`/`ASK`, and reconnects to a node that
//! came back. revgate does no slot routing of its own, with one exception:
//! every key of a deployment shares one hash tag (`{P}`), so all of them
//! live in one slot, and the few commands that name no key but are about
//! that slot's node (`SCAN`, `DBSIZE`, `INFO`, `WAIT`, `WAITAOF`) are sent
//! to the master of that slot through the client's own routing
//! ([`ClusterConnection::route_command`]) rather than to a random node or
//! every master (the client's defaults for them). Pipelines (the bulk
//! import's batches) go whole to that same master
//! ([`ClusterConnection::route_pipeline`]): the cluster client hands a
//! pipeline to one node's connection as it is, so its commands run in the
//! order sent (and an atomic one would stay one transaction: its keys are
//! all in the one slot).
//!
//! [`ClusterConnection::route_pipeline`]: ::redis::cluster_async::ClusterConnection::route_pipeline
//! [`ClusterConnection::route_command`]: ::redis::cluster_async::ClusterConnection::route_command

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use ::redis::{Arg, Cmd, Pipeline, RedisFuture, Value};

/// A connection to the deployment's Redis.
#[derive(Clone)]
pub enum Conn {
    /// Standalone, or the current master of a Sentinel group.
    Single(MultiplexedConnection),
    /// Redis Cluster; the route is the master of the deployment's slot.
    Cluster(ClusterConnection, Route),
}

impl Conn {
    /// A cluster connection for the deployment whose hash tag is `tag`
    /// (`{prefix}`).
    pub fn cluster(conn: ClusterConnection, tag: &str) -> Conn {
        Conn::Cluster(conn, Route::with_key(tag, SlotAddr::Master))
    }
}

/// Keyless commands that must reach the node holding the deployment's slot.
fn to_the_slot(cmd: &Cmd) -> bool {
    match cmd.args_iter().next() {
        Some(Arg::Simple(name)) => [&b"SCAN"[..], b"DBSIZE", b"INFO", b"WAIT", b"WAITAOF"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n)),
        _ => false,
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c, route) => {
                if to_the_slot(cmd) {
                    let routing =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(*route));
                    Box::pin(async move { c.route_command(cmd.clone(), routing).await })
                } else {
                    c.req_packed_command(cmd)
                }
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c, route) => {
                let route = SingleNodeRoutingInfo::SpecificNode(*route);
                Box::pin(async move {
                    c.route_pipeline(pipeline.clone(), offset, count, route)
                        .await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c, _) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keyless_slot_commands_are_routed_to_the_slot() {
        assert!(to_the_slot(::redis::cmd("SCAN").arg(0)));
        assert!(to_the_slot(&::redis::cmd("wait")));
        assert!(to_the_slot(&::redis::cmd("DBSIZE")));
        assert!(!to_the_slot(::redis::cmd("GET").arg("{p}:tok:00")));
        assert!(!to_the_slot(::redis::cmd("XREAD").arg("STREAMS")));
    }
}
