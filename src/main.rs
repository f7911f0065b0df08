//! The `revgate` binary: `run` (the default), `check-config`, `demo`,
//! `admin` (the admin API from a shell, `revgate::cli::admin`) and
//! `completions bash|zsh|fish|...` (clap_complete).
//!
//! Exit codes: 0 after a clean shutdown; 2 for a bad configuration (every
//! error, each naming its file and key); 1 for any other start-up failure
//! (the store that cannot open among them: reported before `listening`).

#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// mimalloc: it gives freed memory back to the OS while the gateway idles,
/// where glibc's malloc keeps it resident, so ten thousand idle keep-alive
/// connections cost a few KiB each instead of ~13 KiB (BENCHMARKS.md, idle
/// connections). Declaring it needs no `unsafe`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its `mimalloc.h` enum; libmimalloc-sys
/// names no constant for it). A test below pins the number to the option.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps a freed page before giving it back to the OS.
///
/// At 0 (purge at once, sessions 4–5) a gateway taking a new connection per
/// request purged and re-faulted the same pages for every connection: 3.5
/// page faults per request and ~15% of its CPU in `exc_page_fault` and
/// mimalloc's purge (perf, `CONNECTION=close benches/load.sh`, issue 16).
/// At 100 ms the pages are reused while traffic flows (0.34 faults per
/// request) and still go back soon after it stops: mimalloc purges only
/// from inside an allocator call, so every I/O thread's heartbeat
/// (`server::on_heartbeat`, four times a second) calls [`collect`], which
/// purges what has waited past the delay. Ten thousand connections going
/// idle at once therefore hand their memory back within ~0.4 s, without
/// waiting for the next traffic (BENCHMARKS.md, "Idle memory that stays
/// freed"). `MIMALLOC_PURGE_DELAY` in the environment still wins.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

#[allow(unsafe_code)]
fn purge_freed_memory_soon() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an integer in mimalloc's option
        // table; any value of this option is valid (milliseconds).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
    revgate::server::on_heartbeat(collect);
}

/// Purges this thread's freed memory that has waited past the purge delay.
#[allow(unsafe_code)]
fn collect() {
    // SAFETY: mi_collect takes no pointer; `false` asks for the normal
    // (non-forced) collection of the calling thread's heap.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use revgate::config::{Config, Overrides};
use revgate::dialect::RevokeMode;
use revgate::proxy::Gateway;
use revgate::tls::SniResolver;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "revgate",
    version = revgate::cli::VERSION,
    about = "A reverse proxy that makes bearer-token revocation real"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    overrides: Overrides,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run {
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Check a configuration file and exit: 0 if valid, 2 with the bad key otherwise.
    CheckConfig {
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Run the gateway in front of a built-in echo upstream (embedded store, terminate mode).
    Demo {
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Call the admin API: revoke, look up, un-revoke, list.
    Admin(revgate::cli::admin::AdminArgs),
    /// Print a shell completion script, e.g. `revgate completions bash > /etc/bash_completion.d/revgate`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    purge_freed_memory_soon();
    let cli = Cli::parse();
    let (cmd, overrides) = match cli.command {
        None => ("run", cli.overrides),
        Some(Command::Run { overrides }) => ("run", overrides),
        Some(Command::CheckConfig { overrides }) => ("check-config", overrides),
        Some(Command::Demo { overrides }) => ("demo", overrides),
        Some(Command::Admin(args)) => {
            return match revgate::cli::admin::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("revgate admin: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory as _;
            use std::io::Write as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "revgate", &mut script);
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(&script);
            return ExitCode::SUCCESS;
        }
    };
    // The demo's own defaults are applied in `serve`; check its file and
    // flags like any other.
    let config = match overrides.load_all() {
        Ok(c) => c,
        Err(report) => {
            eprintln!("revgate: invalid configuration:\n{report}");
            return ExitCode::from(2);
        }
    };
    if cmd == "check-config" {
        let file = overrides.config.as_deref();
        if let Err(report) = revgate::config::ConfigReport::check_with_journal(&config, file) {
            eprintln!("revgate: invalid configuration:\n{report}");
            return ExitCode::from(2);
        }
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    if cmd != "demo" {
        if let Err(report) =
            revgate::config::ConfigReport::check(&config, overrides.config.as_deref())
        {
            eprintln!("revgate: invalid configuration:\n{report}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("revgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cmd == "demo", config, overrides)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("revgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(demo: bool, mut config: Config, overrides: Overrides) -> anyhow::Result<ExitCode> {
    revgate::telemetry::init(config.log.format, &config.log.filter);
    let shutdown = CancellationToken::new();
    if demo {
        // The echo answers inside the gateway (`revgate::builtin`).
        config.upstream.url = Some("builtin:echo".into());
        if overrides.revoke_mode.is_none() {
            config.revoke.mode = RevokeMode::Terminate;
        }
        if overrides.journal.is_none() && overrides.config.is_none() {
            // A fresh journal each run, so `demo-token` starts allowed: the
            // previous run's file is removed (with its fingerprint key).
            let journal = std::env::temp_dir().join("revgate-demo.journal");
            for suffix in ["", ".key"] {
                let mut p = journal.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
            config.store.journal = journal;
        }
    }
    let settings = match config.validate() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("revgate: invalid configuration: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let listeners = match revgate::Listeners::bind(&settings).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("revgate: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // The store opens (journal replayed, Redis loaded) before `listening` is
    // printed: a journal that cannot be written fails here, not after.
    let started = match revgate::start(settings, shutdown.clone()).await {
        Ok(s) => s,
        Err(revgate::StartError::Config(e)) => {
            eprintln!("revgate: invalid configuration: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => {
            eprintln!("revgate: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let http = listeners.http.local_addr()?;
    let admin = listeners.admin.local_addr()?;
    // One machine-readable line on stdout: tests and scripts read the bound
    // ports from it (useful with port 0).
    println!(
        "{}",
        serde_json::json!({"event": "listening", "listen": http.to_string(), "admin": admin.to_string()})
    );
    if demo {
        eprintln!("revgate demo: gateway on http://{http}, admin on http://{admin}, echo upstream behind it (fresh journal each run)");
        eprintln!("  curl -i -H 'Authorization: Bearer demo-token' http://{http}/hello");
        eprintln!("  curl -i -X POST http://{http}/oauth/revoke -d token=demo-token");
        eprintln!(
            "  curl -i -H 'Authorization: Bearer demo-token' http://{http}/hello   # now 401"
        );
    }
    let running = started.running();
    signals(shutdown.clone(), overrides, running.gateway, running.tls);
    started.serve(listeners, shutdown).await;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM/SIGINT: graceful shutdown. SIGHUP: reload the config file and
/// certificates; a bad new config is logged and the old one keeps serving.
/// SIGUSR1: reopen the access log's file (after logrotate moved it).
fn signals(
    shutdown: CancellationToken,
    overrides: Overrides,
    gateway: Arc<Gateway>,
    tls: Option<Arc<SniResolver>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); shutdown.cancel(); return; }
                _ = int.recv() => { tracing::info!("SIGINT: draining"); shutdown.cancel(); return; }
                _ = hup.recv() => reload(&overrides, &gateway, tls.as_deref()),
                _ = usr1.recv() => {
                    if let Some(log) = gateway.access_log() {
                        log.reopen();
                        tracing::info!("SIGUSR1: reopening the access log");
                    }
                }
            }
        }
    });
}

fn reload(overrides: &Overrides, gateway: &Gateway, tls: Option<&SniResolver>) {
    let settings = match overrides.load().and_then(|c| c.validate()) {
        Ok(s) => s,
        Err(e) => {
            revgate::metrics::reload("config", false);
            tracing::error!(error = %e, "SIGHUP: new configuration rejected; keeping the old one");
            return;
        }
    };
    let key = Arc::new(gateway.runtime().key().clone());
    match revgate::proxy::Runtime::new(settings, key) {
        Ok(rt) => {
            gateway.reload(rt);
            revgate::metrics::reload("config", true);
            tracing::info!("SIGHUP: configuration reloaded");
        }
        Err(e) => {
            revgate::metrics::reload("config", false);
            tracing::error!(error = %e, "SIGHUP: new configuration rejected; keeping the old one")
        }
    }
    if let Some(r) = tls {
        if let Err(e) = r.reload() {
            tracing::error!(error = %e, "SIGHUP: certificate reload failed; keeping the old certificate");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MI_OPTION_PURGE_DELAY;

    /// Option 15 is `purge_delay`: set it, and mimalloc's own `mi_option_get`
    /// of the same number reads it back; its default (before any set) is the
    /// 1,000 ms mimalloc v3 documents for purge_delay, which no neighbouring
    /// option has, so a renumbered enum fails here.
    #[test]
    #[allow(unsafe_code)]
    fn option_fifteen_is_purge_delay() {
        // SAFETY: reads and sets an integer in mimalloc's option table.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000);
        // SAFETY: as above.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
        // SAFETY: as above.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            0
        );
    }
}
