//! The tasks and threads of a test server, spawned through [`Tasks`] so that
//! a panic in any of them fails the test: the panic is recorded and raised
//! again when the server is dropped (or [`Tasks::check`]ed), instead of
//! vanishing with its task while the test goes on against a half-dead
//! server. (linkerd2-proxy's test servers re-raise the same way on `join`.)
//!
//! The panic is recorded by a panic hook, at the moment of the panic and
//! before unwinding closes anything, so a test that saw the server's
//! connection drop is sure to find the panic recorded: no race with the
//! close, no waiting.
#![allow(dead_code)]

use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll};

use futures_util::FutureExt as _;

type Panics = Arc<Mutex<Vec<String>>>;

thread_local! {
    /// The server whose task or thread is running on this thread right now.
    static CURRENT: RefCell<Option<Panics>> = const { RefCell::new(None) };
}

/// Installs (once per process) the hook that records a panic into the
/// current server's list, then runs the previous hook (which prints it).
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(a non-string panic)".into());
            let _ = CURRENT.try_with(|c| {
                if let Ok(c) = c.try_borrow() {
                    if let Some(panics) = &*c {
                        if let Ok(mut p) = panics.lock() {
                            p.push(message);
                        }
                    }
                }
            });
            previous(info);
        }));
    });
}

/// Sets [`CURRENT`] for as long as it lives (restored during unwinding too).
struct Scope(Option<Panics>);

impl Scope {
    fn enter(panics: &Panics) -> Scope {
        Scope(CURRENT.with(|c| c.replace(Some(panics.clone()))))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// A future polled inside its server's [`Scope`].
struct Scoped<F> {
    inner: Pin<Box<F>>,
    panics: Panics,
}

impl<F: Future<Output = ()>> Future for Scoped<F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let _scope = Scope::enter(&self.panics);
        self.inner.as_mut().poll(cx)
    }
}

/// A test server's spawned work and the panics it raised.
#[derive(Clone, Default)]
pub struct Tasks {
    panics: Panics,
    aborts: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Tasks {
    /// Spawns `fut` on the current runtime; a panic in it is recorded.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        install_hook();
        let scoped = Scoped {
            inner: Box::pin(fut),
            panics: self.panics.clone(),
        };
        // Caught so the runtime does not report it a second time.
        let handle = tokio::spawn(async move {
            let _ = AssertUnwindSafe(scoped).catch_unwind().await;
        });
        let mut aborts = self.aborts.lock().unwrap();
        aborts.retain(|h| !h.is_finished());
        aborts.push(handle.abort_handle());
    }

    /// Runs `f` on a new thread; a panic in it is recorded.
    pub fn thread(&self, f: impl FnOnce() + Send + 'static) {
        install_hook();
        let panics = self.panics.clone();
        std::thread::Builder::new()
            .name("test-server".into())
            .spawn(move || {
                let _scope = Scope::enter(&panics);
                let _ = std::panic::catch_unwind(AssertUnwindSafe(f));
            })
            .unwrap();
    }

    /// Fails the test if any task or thread panicked so far.
    pub fn check(&self) {
        let panics = std::mem::take(&mut *self.panics.lock().unwrap());
        assert!(
            panics.is_empty(),
            "a test server task panicked: {}",
            panics.join("; ")
        );
    }

    /// Aborts the tasks, then [`check`](Self::check)s unless the test is
    /// already failing (a second panic while unwinding would abort the run).
    /// For the owning server's `Drop`.
    pub fn finish(&self) {
        for h in self.aborts.lock().unwrap().drain(..) {
            h.abort();
        }
        if !std::thread::panicking() {
            self.check();
        }
    }
}
