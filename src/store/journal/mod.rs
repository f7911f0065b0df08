//! The append-only journal: a revocation is on disk, fsync'd, before it is
//! acknowledged; the journal is replayed at start and compacted to drop
//! expired rules without ever dropping an acknowledged one.
//!
//! # Records
//!
//! The file starts with a header carrying a format version; each record is
//! framed `[len: u32 LE][crc32(payload): u32 LE][payload]`, the payload a
//! kind byte and a binary body (fingerprints only, never raw tokens): see
//! [`record`] for the layout. A torn or corrupt tail (a `kill -9` mid-write,
//! a bad sector) is detected by a short read or a CRC mismatch: replay keeps
//! the good prefix, reports what it cut, and truncates the file there so
//! later appends follow good records. A record with a good CRC that does not
//! decode (a kind from a newer build) stops the start instead: cutting it
//! would drop acknowledged revocations.
//!
//! Upgrade: a journal written before the versioned format (no header, JSON
//! payloads) is replayed and rewritten in the current format at open, beside
//! it, fsync'd and renamed over it (a crash before the rename leaves the old
//! file, upgraded again next time).
//!
//! # Group commit
//!
//! One writer thread owns the file. It takes every append that is waiting,
//! writes them in one `write`, calls `fdatasync` once, and then acknowledges
//! all of them, so throughput grows with concurrency while each
//! acknowledgement still means "on disk". A failed `write` is cut off again
//! (`ftruncate` to the last good length) so later records never follow a
//! half-written one; a failed `fdatasync` poisons the journal (every later
//! append fails, so revokes answer an error instead of a false ack), because
//! after a failed fsync Linux may have dropped the dirty pages and a retry
//! proves nothing.
//!
//! A batch ([`Journal::append_batch`], the bulk import's) is one job: its
//! records are written in the same `write` and covered by the same
//! `fdatasync`, so a batch of 10,000 revocations costs one fsync.
//!
//! # Compaction that loses nothing
//!
//! A compaction replaces the journal with the live rules, but appends keep
//! arriving while those are written, so the new file is built in two parts:
//!
//! 1. [`Journal::mark`]: the writer answers with the journal's current
//!    length and generation, ordered with appends (it is a job in the same
//!    queue). The caller guarantees that every record before the mark is
//!    already in the state it will snapshot ([`super::memory::MemoryStore`]
//!    holds a gate so no apply is between its append and its memory update).
//! 2. [`Journal::snapshot`] + [`Snapshot::push`]: the caller streams the live
//!    rules into `<journal>.compact`, off the writer thread; appends go on
//!    being written and fsync'd to the old journal meanwhile.
//! 3. [`Journal::install`]: on the writer thread (so no append runs in
//!    between), every byte journaled since the mark is copied from the old
//!    file onto the end of the new one, the new file is fsync'd, renamed over
//!    the journal, the directory fsync'd, and appends continue on the new
//!    file. Replay applies the snapshot, then the tail in journal order: a
//!    rule the snapshot also saw is applied twice, which is harmless (token
//!    and scope rules merge by maximum, a removal removes).
//!
//! If the generation changed since the mark (another rewrite ran), install
//! refuses and the compaction is simply skipped.
//!
//! Crash points, and what a restart finds:
//!
//! | crash while / after | on disk after restart |
//! |---|---|
//! | writing the snapshot, copying the tail, or before the new file's fsync | the old journal, whole: every acknowledged append was fsync'd to it; the stale `.compact` is deleted at open |
//! | after the new file's fsync, before the rename | the same |
//! | after the rename, before the directory fsync | a process crash sees the new file; a power loss may see either name's inode, and both hold every acknowledged record (no append is acknowledged between the tail copy and the directory fsync: they wait in the writer's queue) |
//! | after the directory fsync | the new file: snapshot + tail, fsync'd |
//! | an append after the install | it went to the new file and was fsync'd before its ack |
//!
//! The tail is read back from the old file rather than kept in memory, so a
//! compaction's memory stays flat whatever the rate of revocations during it.
//! [`Journal::rewrite`] (replace with exactly these records, for the Redis
//! outbox, whose caller holds a lock across append and rewrite) has no tail.
//!
//! # Layout
//!
//! ```text
//! mod.rs         the Journal handle: open (replay), append, mark, snapshot, install
//! record.rs      the on-disk format: header, framed records, the v1 decoder
//! replay.rs      streaming decode of the good prefix, tail cut, v1 upgrade
//! writer.rs      the writer thread: group commit, failed-write cut, fsync poison
//! compaction.rs  Mark, Snapshot, Installed; the .compact / .rewrite siblings
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use super::RevocationCommand;

mod compaction;
pub mod record;
mod replay;
mod writer;

#[cfg(test)]
mod tests;

use compaction::{compact_path, rewrite_path};
pub use compaction::{Installed, Mark, Snapshot};
use replay::replay;
use writer::{closed, Writer};

/// Largest record accepted on replay; anything larger is corruption.
const MAX_RECORD: usize = 1 << 20;
/// Most appends gathered into one fsync.
const MAX_BATCH: usize = 4096;

/// What replay found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Good records replayed.
    pub records: u64,
    /// Bytes cut from a torn or corrupt tail (0 when the file was clean).
    pub torn_bytes: u64,
    /// The format version the file was upgraded from, if it was.
    pub upgraded_from: Option<u8>,
}

enum Job {
    /// Framed records, how many, and who waits for their fsync.
    Append(Vec<u8>, u64, oneshot::Sender<io::Result<()>>),
    Rewrite(Vec<u8>, oneshot::Sender<io::Result<()>>),
    Mark(oneshot::Sender<io::Result<Mark>>),
    Install(File, Mark, u64, oneshot::Sender<io::Result<Installed>>),
}

/// A handle on the journal; cheap to share behind an `Arc`.
pub struct Journal {
    tx: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    path: PathBuf,
    /// Records appended since open or the last rewrite.
    appended: Arc<AtomicU64>,
    /// A snapshot is being written (one at a time: they share a file name).
    compacting: Arc<AtomicBool>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens (or creates) the journal at `path`, replays its good prefix and
    /// truncates a torn tail. Returns the journal, the replayed commands in
    /// order, and what replay found.
    pub fn open(path: &Path) -> io::Result<(Journal, Vec<RevocationCommand>, ReplayReport)> {
        let mut commands = Vec::new();
        let (journal, report) = Self::open_with(path, |c| commands.push(c))?;
        Ok((journal, commands, report))
    }

    /// Like [`Journal::open`], handing each replayed command to `each` as it
    /// is decoded instead of collecting them (flat memory for large journals).
    pub fn open_with(
        path: &Path,
        each: impl FnMut(RevocationCommand),
    ) -> io::Result<(Journal, ReplayReport)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // A compaction that did not reach its rename: the journal itself
        // still holds everything, so the half-built file is only litter.
        for stale in [
            compact_path(path),
            rewrite_path(path),
            path.with_extension("compact"),
        ] {
            match std::fs::remove_file(&stale) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let (good, report) = replay(path, each)?;
        let file = OpenOptions::new().append(true).open(path)?;
        let appended = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let writer = {
            let state = Writer {
                file,
                len: good,
                generation: 0,
                poisoned: None,
                path: path.to_path_buf(),
                appended: appended.clone(),
            };
            std::thread::Builder::new()
                .name("revgate-journal".into())
                .spawn(move || state.run(rx))?
        };
        Ok((
            Journal {
                tx: std::sync::Mutex::new(Some(tx)),
                path: path.to_path_buf(),
                appended,
                compacting: Arc::new(AtomicBool::new(false)),
                writer: std::sync::Mutex::new(Some(writer)),
            },
            report,
        ))
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records appended since open or the last rewrite.
    pub fn appended_since_rewrite(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    fn send(&self, job: Job) -> io::Result<()> {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let tx = guard
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "journal closed"))?;
        tx.send(job).map_err(|_| closed())
    }

    /// Appends one command; returns once it is fsync'd.
    pub async fn append(&self, cmd: &RevocationCommand) -> io::Result<()> {
        let mut record = Vec::with_capacity(64);
        record::encode_into(&mut record, cmd);
        let (done, wait) = oneshot::channel();
        self.send(Job::Append(record, 1, done))?;
        wait.await.map_err(|_| closed())?
    }

    /// Appends many commands as one write and one fsync (a bulk import's
    /// batch); returns once all of them are on disk. A failed write is cut
    /// off whole; a crash mid-write may leave a prefix of the batch, which
    /// replay keeps (never acknowledged, so never counted, and harmless).
    /// An empty batch returns at once.
    pub async fn append_batch<'a>(
        &self,
        cmds: impl IntoIterator<Item = &'a RevocationCommand>,
    ) -> io::Result<()> {
        let mut record = Vec::new();
        let mut n = 0u64;
        for cmd in cmds {
            record::encode_into(&mut record, cmd);
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.send(Job::Append(record, n, done))?;
        wait.await.map_err(|_| closed())?
    }

    /// Replaces the journal's content with exactly these commands,
    /// atomically. Appends that race with it are lost unless the caller
    /// orders them (the Redis outbox holds its lock); compaction uses
    /// [`Journal::mark`], [`Journal::snapshot`] and [`Journal::install`].
    pub async fn rewrite(
        &self,
        live: impl IntoIterator<Item = RevocationCommand>,
    ) -> io::Result<()> {
        let mut bytes = record::HEADER.to_vec();
        for cmd in live {
            record::encode_into(&mut bytes, &cmd);
        }
        let (done, wait) = oneshot::channel();
        self.send(Job::Rewrite(bytes, done))?;
        wait.await.map_err(|_| closed())?
    }

    /// The point after every append queued so far (step 1 of a compaction).
    pub async fn mark(&self) -> io::Result<Mark> {
        let (done, wait) = oneshot::channel();
        self.send(Job::Mark(done))?;
        wait.await.map_err(|_| closed())?
    }

    /// Starts writing a compacted journal beside this one (step 2). One at a
    /// time: a second concurrent call fails with `WouldBlock`.
    pub fn snapshot(&self, mark: Mark) -> io::Result<Snapshot> {
        if self.compacting.swap(true, Ordering::AcqRel) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "a compaction is already running",
            ));
        }
        let path = compact_path(&self.path);
        let busy = self.compacting.clone();
        let created = File::create(&path).and_then(|f| {
            let mut out = BufWriter::with_capacity(1 << 20, f);
            out.write_all(&record::HEADER)?;
            Ok(out)
        });
        let out = match created {
            Ok(out) => out,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                busy.store(false, Ordering::Release);
                return Err(e);
            }
        };
        Ok(Snapshot {
            out: Some(out),
            path,
            mark,
            records: 0,
            record: Vec::with_capacity(128),
            busy,
        })
    }

    /// Appends what was journaled since the snapshot's mark to it and puts it
    /// in place of the journal, durably (step 3; see the module doc).
    pub async fn install(&self, mut snapshot: Snapshot) -> io::Result<Installed> {
        let out = snapshot
            .out
            .take()
            .ok_or_else(|| io::Error::other("snapshot already installed"))?;
        let file = match out.into_inner() {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&snapshot.path);
                return Err(e.into_error());
            }
        };
        let (done, wait) = oneshot::channel();
        let sent = self.send(Job::Install(file, snapshot.mark, snapshot.records, done));
        let result = match sent {
            Ok(()) => wait.await.map_err(|_| closed()).and_then(|r| r),
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Never renamed: the journal is untouched; drop the litter.
            let _ = std::fs::remove_file(&snapshot.path);
        }
        result
    }

    /// Stops the writer after every queued append is on disk.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = w.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}
