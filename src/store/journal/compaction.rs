//! Compaction's parts: a [`Mark`] in the journal, the [`Snapshot`] of the
//! live rules written beside it, and what [`Journal::install`](super::Journal::install)
//! put in place; the sibling file names (`.compact`, `.rewrite`) the
//! rewrites use. The sequence and its crash points are in the module doc of
//! [`journal`](super).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::record;
#[cfg(doc)]
use super::Journal;
use crate::store::RevocationCommand;

/// A point in the journal, from [`Journal::mark`]: everything appended
/// after it is copied into the compacted file by [`Journal::install`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub(super) generation: u64,
    pub(super) offset: u64,
    pub(super) appended: u64,
}

/// A compacted journal being written beside the live one (see the module
/// doc); deleted if dropped without [`Journal::install`].
pub struct Snapshot {
    pub(super) out: Option<BufWriter<File>>,
    pub(super) path: PathBuf,
    pub(super) mark: Mark,
    pub(super) records: u64,
    pub(super) record: Vec<u8>,
    pub(super) busy: Arc<AtomicBool>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("path", &self.path)
            .field("records", &self.records)
            .finish()
    }
}

impl Snapshot {
    /// Writes one live rule into the snapshot.
    pub fn push(&mut self, cmd: &RevocationCommand) -> io::Result<()> {
        self.record.clear();
        record::encode_into(&mut self.record, cmd);
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("snapshot already installed"))?;
        out.write_all(&self.record)?;
        self.records += 1;
        Ok(())
    }

    /// Records pushed so far.
    pub fn records(&self) -> u64 {
        self.records
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
        self.busy.store(false, Ordering::Release);
    }
}

/// What [`Journal::install`] put in place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    /// Records from the snapshot.
    pub snapshot_records: u64,
    /// Records journaled during the compaction, copied after them.
    pub tail_records: u64,
    /// Size of the new journal, bytes.
    pub bytes: u64,
}

/// `<journal>.compact`: where a compacted journal is written before the rename.
pub(super) fn compact_path(path: &Path) -> PathBuf {
    sibling(path, ".compact")
}

/// `<journal>.rewrite`: where [`Journal::rewrite`] writes before the rename
/// (its own name: a rewrite that ran while a snapshot was being written must
/// not truncate the snapshot's file and rename it, still being written, into
/// place).
pub(super) fn rewrite_path(path: &Path) -> PathBuf {
    sibling(path, ".rewrite")
}

pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(suffix);
    PathBuf::from(p)
}
