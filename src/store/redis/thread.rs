//! The store's own thread: a single-threaded tokio runtime that runs the
//! stream tail (and, in confirmed mode, the lease and confirmation tasks),
//! so propagation never queues behind request work.
//!
//! Before, the tail shared the request runtime's workers: under load an
//! event that had reached the instance's socket waited behind the runnable
//! request tasks before it was applied (issue 14: p99 6.9-11.2 ms at ~61k
//! req/s; `benches/redis_store.rs propagation_load` here: probes of B still
//! passed up to 3.7-19 ms after A's 200). On its own thread the tail is
//! woken by the OS, which favours a thread that has been sleeping: in the
//! same bench no probe passed later than 0.5 ms after A's 200
//! (BENCHMARKS.md, "Issue 14").
//!
//! The connections the sync task opens are driven here too (redis-rs spawns
//! a connection's driver on the runtime that opened it), so the tail's
//! socket is read on this thread. Requests' exact lookups (bloom hits only)
//! go through the command connection's driver on this thread as well: a
//! channel send and a wake-up, no blocking.
//!
//! The thread ends when `stop` is cancelled; its tasks are dropped at
//! their next await, as the request runtime's would be at shutdown.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running store thread.
pub struct StoreThread {
    handle: Handle,
}

impl StoreThread {
    /// Starts the thread; it runs until `stop` is cancelled.
    pub fn start(stop: CancellationToken) -> std::io::Result<StoreThread> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("revgate-redis")
            .build()?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("revgate-redis".into())
            .spawn(move || {
                rt.block_on(stop.cancelled());
                rt.shutdown_timeout(std::time::Duration::from_secs(1));
            })?;
        Ok(StoreThread { handle })
    }

    /// Runs `task` on the store thread.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(task)
    }
}
