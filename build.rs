//! Build script: records the git commit the binary is built from, for
//! `revgate --version` and `revgate_build_info{commit}`.
//!
//! `REVGATE_BUILD_COMMIT` in the environment wins (a container build has no
//! `.git`: pass the commit as a build argument); else `git rev-parse`; else
//! `unknown`, never a failed build.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=REVGATE_BUILD_COMMIT");
    let commit = match std::env::var("REVGATE_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => match git(&["rev-parse", "--short=12", "HEAD"]) {
            Some(c) => {
                // Rebuild when HEAD moves: HEAD itself, and the ref it names.
                for path in ["HEAD", "packed-refs"] {
                    if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                        println!("cargo:rerun-if-changed={p}");
                    }
                }
                if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    if let Some(p) = git(&["rev-parse", "--git-path", &r]) {
                        println!("cargo:rerun-if-changed={p}");
                    }
                }
                // No "-dirty" mark: this script reruns when HEAD moves, not
                // on every edit, so such a mark would go stale.
                c
            }
            None => "unknown".to_string(),
        },
    };
    println!("cargo:rustc-env=REVGATE_COMMIT={commit}");
}
