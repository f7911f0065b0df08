//! Subcommands of the `revgate` binary that are not the gateway itself:
//! `admin` (the admin API from a shell, [`admin`]) and what `--version`
//! reports ([`VERSION`]: the crate version and the commit it was built from,
//! by `build.rs`).

pub mod admin;
pub mod bulk;

/// `0.1.0 (commit 1a2b3c4d5e6f)`, or `(commit unknown)` when built outside
/// a git checkout (a source tarball, a container build without `.git`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("REVGATE_COMMIT"),
    ")"
);

/// The commit alone, as `revgate_build_info{commit}` shows it.
pub const COMMIT: &str = env!("REVGATE_COMMIT");
