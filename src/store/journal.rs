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

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use super::RevocationCommand;

pub mod record;

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

/// A point in the journal, from [`Journal::mark`]: everything appended
/// after it is copied into the compacted file by [`Journal::install`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    generation: u64,
    offset: u64,
    appended: u64,
}

/// A compacted journal being written beside the live one (see the module
/// doc); deleted if dropped without [`Journal::install`].
pub struct Snapshot {
    out: Option<BufWriter<File>>,
    path: PathBuf,
    mark: Mark,
    records: u64,
    record: Vec<u8>,
    busy: Arc<AtomicBool>,
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

enum Job {
    Append(Vec<u8>, oneshot::Sender<io::Result<()>>),
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

/// Which record format a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// No header, JSON payloads (before issue 10): read, then upgraded.
    V1,
    /// [`record::HEADER`], binary payloads.
    V2,
}

/// Decodes the good prefix of a journal from `reader` (positioned after the
/// header), streaming: memory stays flat whatever the journal's size.
/// Returns the records decoded and the prefix's length, from `start`. A
/// torn or corrupt record ends the prefix; a version-2 record with a good
/// checksum that does not decode is an error (see [`record`]).
fn decode(
    reader: impl Read,
    format: Format,
    start: u64,
    mut each: impl FnMut(RevocationCommand) -> io::Result<()>,
) -> io::Result<(u64, u64)> {
    let mut reader = io::BufReader::with_capacity(256 * 1024, reader);
    let mut records = 0u64;
    let mut good: u64 = start;
    let mut head = [0u8; record::FRAME];
    let mut payload = Vec::with_capacity(256);
    loop {
        if !read_full(&mut reader, &mut head)? {
            break;
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD {
            break;
        }
        payload.resize(len, 0);
        if !read_full(&mut reader, &mut payload)? || crc32fast::hash(&payload) != crc {
            break;
        }
        let cmd = match format {
            Format::V1 => match record::decode_v1_payload(&payload) {
                Some(cmd) => cmd,
                None => break,
            },
            Format::V2 => record::decode_payload(&payload).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("journal record at byte {good}: {e}"),
                )
            })?,
        };
        each(cmd)?;
        records += 1;
        good += (record::FRAME + len) as u64;
    }
    Ok((records, good))
}

/// Fills `buf`; false at a clean or torn end of file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => return Ok(false),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `<journal>.compact`: where a compacted journal is written before the rename.
fn compact_path(path: &Path) -> PathBuf {
    sibling(path, ".compact")
}

/// `<journal>.rewrite`: where [`Journal::rewrite`] writes before the rename
/// (its own name: a rewrite that ran while a snapshot was being written must
/// not truncate the snapshot's file and rename it, still being written, into
/// place).
fn rewrite_path(path: &Path) -> PathBuf {
    sibling(path, ".rewrite")
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(suffix);
    PathBuf::from(p)
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "journal writer stopped")
}

/// Replays the journal at `path` into `each`, cuts a torn tail, writes the
/// header of a new file and upgrades a version-1 file; returns the length of
/// the good prefix (where appends go on) and what was found.
fn replay(path: &Path, mut each: impl FnMut(RevocationCommand)) -> io::Result<(u64, ReplayReport)> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let size = file.metadata()?.len();
    let mut header = [0u8; record::HEADER.len()];
    let have_header = read_full(&mut file, &mut header)?;
    if !have_header {
        // New, or shorter than a header: a crash while it was created (or a
        // version-1 file torn inside its first record). Nothing in it was
        // ever acknowledged.
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&record::HEADER)?;
        file.sync_all()?;
        sync_dir(path)?;
        let report = ReplayReport {
            torn_bytes: size,
            ..ReplayReport::default()
        };
        return Ok((record::HEADER.len() as u64, report));
    }
    if header[..4] == record::MAGIC {
        if header[4] != record::VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "journal format version {} is unknown to this build (it writes {})",
                    header[4],
                    record::VERSION
                ),
            ));
        }
        let start = record::HEADER.len() as u64;
        let (records, good) = decode(&mut file, Format::V2, start, |c| {
            each(c);
            Ok(())
        })?;
        if good < size {
            file.set_len(good)?;
            file.sync_all()?;
        }
        let report = ReplayReport {
            records,
            torn_bytes: size - good,
            upgraded_from: None,
        };
        return Ok((good, report));
    }
    drop(file);
    upgrade_v1(path, size, each)
}

/// Replays a version-1 (JSON) journal and rewrites it in the current format
/// in one pass: the new file is written beside it, fsync'd and renamed over
/// it. A crash before the rename leaves the old file, upgraded again at the
/// next start; after it, the new one. Its torn tail, if any, is not copied.
fn upgrade_v1(
    path: &Path,
    size: u64,
    mut each: impl FnMut(RevocationCommand),
) -> io::Result<(u64, ReplayReport)> {
    let old = File::open(path)?;
    let tmp = compact_path(path);
    let result = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        out.write_all(&record::HEADER)?;
        let mut buf = Vec::with_capacity(64);
        let mut written = record::HEADER.len() as u64;
        let (records, good) = decode(old, Format::V1, 0, |cmd| {
            buf.clear();
            record::encode_into(&mut buf, &cmd);
            out.write_all(&buf)?;
            written += buf.len() as u64;
            each(cmd);
            Ok(())
        })?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        sync_dir(path)?;
        Ok((written, records, good))
    })();
    let (written, records, good) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    tracing::info!(
        journal = %path.display(),
        records,
        from_bytes = size,
        to_bytes = written,
        "journal upgraded from format version 1 (JSON) to {}",
        record::VERSION
    );
    Ok((
        written,
        ReplayReport {
            records,
            torn_bytes: size - good,
            upgraded_from: Some(1),
        },
    ))
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
        self.send(Job::Append(record, done))?;
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

/// The writer thread's state: the file, and how much of it is good.
struct Writer {
    file: File,
    /// Bytes of whole, written records (the file's length unless a write
    /// failed and could not be cut off).
    len: u64,
    /// Bumped by every rewrite or install: a mark names the file it was taken on.
    generation: u64,
    /// Set by a failed fsync: nothing written since can be trusted to be on disk.
    poisoned: Option<String>,
    path: PathBuf,
    appended: Arc<AtomicU64>,
}

fn copy_err(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut acks: Vec<oneshot::Sender<io::Result<()>>> = Vec::with_capacity(256);
        let mut pending: Option<Job> = None;
        loop {
            let job = match pending.take() {
                Some(j) => j,
                None => match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                },
            };
            match job {
                Job::Append(record, ack) => {
                    batch.clear();
                    acks.clear();
                    batch.extend_from_slice(&record);
                    acks.push(ack);
                    // Gather whatever else is already waiting: one fsync for all.
                    while acks.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(Job::Append(r, a)) => {
                                batch.extend_from_slice(&r);
                                acks.push(a);
                            }
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let result = self.append(&batch);
                    if result.is_ok() {
                        self.appended
                            .fetch_add(acks.len() as u64, Ordering::Relaxed);
                    }
                    for ack in acks.drain(..) {
                        let _ = ack.send(result.as_ref().map(|_| ()).map_err(copy_err));
                    }
                }
                Job::Rewrite(bytes, ack) => {
                    let _ = ack.send(self.rewrite(&bytes));
                }
                Job::Mark(ack) => {
                    let _ = ack.send(self.healthy().map(|()| Mark {
                        generation: self.generation,
                        offset: self.len,
                        appended: self.appended.load(Ordering::Relaxed),
                    }));
                }
                Job::Install(file, mark, records, ack) => {
                    let _ = ack.send(self.install(file, mark, records));
                }
            }
        }
    }

    fn healthy(&self) -> io::Result<()> {
        match &self.poisoned {
            None => Ok(()),
            Some(why) => Err(io::Error::other(format!(
                "journal unusable after a failed fsync ({why}); restart to replay it"
            ))),
        }
    }

    fn append(&mut self, batch: &[u8]) -> io::Result<()> {
        self.healthy()?;
        if let Err(e) = self.file.write_all(batch) {
            // Cut a partial write off, or later records would follow garbage
            // and replay would stop before them.
            if let Err(cut) = self.file.set_len(self.len) {
                self.poisoned = Some(format!(
                    "write failed ({e}) and could not be cut off ({cut})"
                ));
            }
            return Err(e);
        }
        if let Err(e) = self.file.sync_data() {
            self.poisoned = Some(e.to_string());
            return Err(e);
        }
        self.len += batch.len() as u64;
        Ok(())
    }

    fn rewrite(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.healthy()?;
        let tmp = rewrite_path(&self.path);
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            self.put_in_place(&tmp)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        } else {
            self.len = bytes.len() as u64;
            self.appended.store(0, Ordering::Relaxed);
        }
        result
    }

    fn install(&mut self, mut new: File, mark: Mark, records: u64) -> io::Result<Installed> {
        self.healthy()?;
        if mark.generation != self.generation {
            return Err(io::Error::other(
                "the journal was rewritten since the compaction's mark",
            ));
        }
        let snapshot_len = new.stream_position()?;
        // The tail: every record written since the mark, read back from the
        // old file (all of it fsync'd already).
        let tail_len = self.len - mark.offset;
        let mut old = File::open(&self.path)?;
        old.seek(SeekFrom::Start(mark.offset))?;
        let copied = io::copy(&mut old.take(tail_len), &mut new)?;
        if copied != tail_len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the journal is shorter than its writer wrote",
            ));
        }
        new.sync_all()?;
        drop(new);
        self.put_in_place(&compact_path(&self.path))?;
        let now = self.appended.load(Ordering::Relaxed);
        let tail_records = now - mark.appended;
        self.appended.store(tail_records, Ordering::Relaxed);
        self.len = snapshot_len + tail_len;
        Ok(Installed {
            snapshot_records: records,
            tail_records,
            bytes: self.len,
        })
    }

    /// Renames `tmp` (fsync'd) over the journal, fsyncs the directory and
    /// continues on the new file.
    fn put_in_place(&mut self, tmp: &Path) -> io::Result<()> {
        std::fs::rename(tmp, &self.path)?;
        self.generation += 1;
        // From here the old file is gone; a failure below must not let an
        // append go to it (it would be lost), so the journal is poisoned.
        let reopened =
            sync_dir(&self.path).and_then(|()| OpenOptions::new().append(true).open(&self.path));
        match reopened {
            Ok(f) => {
                self.file = f;
                Ok(())
            }
            Err(e) => {
                self.poisoned = Some(format!("after the rename: {e}"));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Fingerprint;
    use crate::store::TokenRule;

    fn cmd(i: u8) -> RevocationCommand {
        RevocationCommand::Token(TokenRule {
            fingerprint: Fingerprint::from_bytes([i; 16]),
            expires_at: 1_000 + i as u64,
        })
    }

    #[tokio::test]
    async fn appends_replay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        {
            let (j, replayed, _) = Journal::open(&p).unwrap();
            assert!(replayed.is_empty());
            for i in 0..10 {
                j.append(&cmd(i)).await.unwrap();
            }
        }
        let (_j, replayed, report) = Journal::open(&p).unwrap();
        assert_eq!(replayed, (0..10).map(cmd).collect::<Vec<_>>());
        assert_eq!(
            report,
            ReplayReport {
                records: 10,
                torn_bytes: 0,
                upgraded_from: None,
            }
        );
    }

    #[tokio::test]
    async fn concurrent_appends_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let (j, _, _) = Journal::open(&p).unwrap();
        let j = Arc::new(j);
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let j = j.clone();
                tokio::spawn(async move { j.append(&cmd((i % 250) as u8)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        drop(j);
        let (_j, replayed, _) = Journal::open(&p).unwrap();
        assert_eq!(replayed.len(), 200);
    }

    #[tokio::test]
    async fn torn_and_corrupt_tails_keep_the_good_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        {
            let (j, _, _) = Journal::open(&p).unwrap();
            for i in 0..3 {
                j.append(&cmd(i)).await.unwrap();
            }
        }
        let good = std::fs::read(&p).unwrap();
        // A torn tail: half a record.
        let mut torn = good.clone();
        let mut extra = Vec::new();
        record::encode_into(&mut extra, &cmd(9));
        torn.extend_from_slice(&extra[..extra.len() / 2]);
        std::fs::write(&p, &torn).unwrap();
        let (j, replayed, report) = Journal::open(&p).unwrap();
        assert_eq!(replayed.len(), 3);
        assert_eq!(report.torn_bytes as usize, extra.len() / 2);
        j.append(&cmd(4)).await.unwrap();
        drop(j);
        let (_j, replayed, report) = Journal::open(&p).unwrap();
        assert_eq!(replayed.last(), Some(&cmd(4)));
        assert_eq!(report.torn_bytes, 0);
        // A flipped bit in the last record.
        let mut bad = std::fs::read(&p).unwrap();
        let n = bad.len();
        bad[n - 2] ^= 0x40;
        std::fs::write(&p, &bad).unwrap();
        let (_j, replayed, report) = Journal::open(&p).unwrap();
        assert_eq!(replayed.len(), 3);
        assert!(report.torn_bytes > 0);
    }

    #[tokio::test]
    async fn rewrite_compacts_and_appends_follow() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let (j, _, _) = Journal::open(&p).unwrap();
        for i in 0..5 {
            j.append(&cmd(i)).await.unwrap();
        }
        j.rewrite([cmd(3)]).await.unwrap();
        j.append(&cmd(7)).await.unwrap();
        assert_eq!(j.appended_since_rewrite(), 1);
        drop(j);
        let (_j, replayed, _) = Journal::open(&p).unwrap();
        assert_eq!(replayed, vec![cmd(3), cmd(7)]);
    }

    #[tokio::test]
    async fn compaction_keeps_what_was_appended_while_the_snapshot_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let (j, _, _) = Journal::open(&p).unwrap();
        for i in 0..5 {
            j.append(&cmd(i)).await.unwrap();
        }
        let mark = j.mark().await.unwrap();
        let mut snap = j.snapshot(mark).unwrap();
        // Acknowledged after the mark, while the snapshot is being written:
        // the snapshot does not have them, the tail must.
        j.append(&cmd(10)).await.unwrap();
        snap.push(&cmd(1)).unwrap();
        snap.push(&cmd(3)).unwrap();
        j.append(&cmd(11)).await.unwrap();
        let installed = j.install(snap).await.unwrap();
        assert_eq!((installed.snapshot_records, installed.tail_records), (2, 2));
        assert_eq!(installed.bytes, std::fs::metadata(&p).unwrap().len());
        assert_eq!(j.appended_since_rewrite(), 2);
        j.append(&cmd(12)).await.unwrap();
        drop(j);
        assert!(!compact_path(&p).exists());
        let (_j, replayed, report) = Journal::open(&p).unwrap();
        assert_eq!(replayed, vec![cmd(1), cmd(3), cmd(10), cmd(11), cmd(12)]);
        assert_eq!(report.torn_bytes, 0);
    }

    #[tokio::test]
    async fn a_compaction_that_never_reached_its_rename_leaves_the_journal_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let (j, _, _) = Journal::open(&p).unwrap();
        for i in 0..3 {
            j.append(&cmd(i)).await.unwrap();
        }
        // Abandoned mid-way (an error while writing it).
        let mut snap = j.snapshot(j.mark().await.unwrap()).unwrap();
        snap.push(&cmd(0)).unwrap();
        j.append(&cmd(3)).await.unwrap();
        drop(snap);
        assert!(
            !compact_path(&p).exists(),
            "an abandoned snapshot is removed"
        );
        // Crashed after the snapshot's fsync, before the rename: the file is
        // still there at the next start.
        let mut snap = j.snapshot(j.mark().await.unwrap()).unwrap();
        snap.push(&cmd(0)).unwrap();
        let file = snap.out.take().unwrap().into_inner().unwrap();
        file.sync_all().unwrap();
        std::mem::forget(snap);
        j.append(&cmd(4)).await.unwrap();
        drop(j);
        assert!(compact_path(&p).exists());
        let (_j, replayed, report) = Journal::open(&p).unwrap();
        assert_eq!(replayed, (0..5).map(cmd).collect::<Vec<_>>());
        assert_eq!(report.torn_bytes, 0);
        assert!(
            !compact_path(&p).exists(),
            "open removes the stale snapshot"
        );
    }

    #[tokio::test]
    async fn install_refuses_a_mark_from_before_a_rewrite_and_one_snapshot_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let (j, _, _) = Journal::open(&p).unwrap();
        j.append(&cmd(1)).await.unwrap();
        let mark = j.mark().await.unwrap();
        let snap = j.snapshot(mark).unwrap();
        assert_eq!(
            j.snapshot(mark).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        j.rewrite([cmd(7)]).await.unwrap();
        j.append(&cmd(8)).await.unwrap();
        // The snapshot goes on being written after the rewrite: into its
        // own file, not into the journal the rewrite put in place.
        let mut snap = snap;
        for i in 20..40 {
            snap.push(&cmd(i)).unwrap();
        }
        assert!(j.install(snap).await.is_err());
        assert!(!compact_path(&p).exists());
        // The next compaction may run.
        let snap = j.snapshot(j.mark().await.unwrap()).unwrap();
        drop(snap);
        drop(j);
        let (_j, replayed, _) = Journal::open(&p).unwrap();
        assert_eq!(replayed, vec![cmd(7), cmd(8)]);
    }

    /// A record as the version-1 (JSON) journal wrote it.
    fn v1_record(buf: &mut Vec<u8>, cmd: &RevocationCommand) {
        let payload = serde_json::to_vec(cmd).unwrap();
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        buf.extend_from_slice(&payload);
    }

    fn every_kind() -> Vec<RevocationCommand> {
        use crate::store::{RevocationTarget, ScopeKey, ScopeRule};
        let key = ScopeKey {
            sub: "u".into(),
            org: Some("o".into()),
            provider: None,
        };
        vec![
            cmd(1),
            RevocationCommand::Scope(ScopeRule {
                key: key.clone(),
                revoked_at: 5,
                expires_at: 50,
            }),
            RevocationCommand::Remove(RevocationTarget::Token(Fingerprint::from_bytes([1; 16]))),
            RevocationCommand::Remove(RevocationTarget::Scope(key)),
            cmd(2),
        ]
    }

    #[tokio::test]
    async fn a_version_1_json_journal_is_replayed_and_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let mut v1 = Vec::new();
        for c in every_kind() {
            v1_record(&mut v1, &c);
        }
        // The old journal's torn tail: half a record.
        let mut torn = Vec::new();
        v1_record(&mut torn, &cmd(9));
        v1.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&p, &v1).unwrap();

        let (j, replayed, report) = Journal::open(&p).unwrap();
        assert_eq!(replayed, every_kind());
        assert_eq!(
            report,
            ReplayReport {
                records: 5,
                torn_bytes: (torn.len() / 2) as u64,
                upgraded_from: Some(1),
            }
        );
        let now = std::fs::read(&p).unwrap();
        assert_eq!(now[..8], record::HEADER);
        assert!(now.len() < v1.len() / 2, "binary records are smaller");
        assert!(!compact_path(&p).exists());
        j.append(&cmd(3)).await.unwrap();
        drop(j);

        let (_j, replayed, report) = Journal::open(&p).unwrap();
        let mut want = every_kind();
        want.push(cmd(3));
        assert_eq!(replayed, want);
        assert_eq!(
            report,
            ReplayReport {
                records: 6,
                torn_bytes: 0,
                upgraded_from: None,
            }
        );
    }

    #[tokio::test]
    async fn an_upgrade_cut_short_by_a_crash_is_done_again_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let mut v1 = Vec::new();
        for c in every_kind() {
            v1_record(&mut v1, &c);
        }
        std::fs::write(&p, &v1).unwrap();
        // The half-written binary file of the interrupted upgrade.
        let mut half = record::HEADER.to_vec();
        record::encode_into(&mut half, &cmd(1));
        half.truncate(half.len() - 3);
        std::fs::write(compact_path(&p), &half).unwrap();
        let (_j, replayed, report) = Journal::open(&p).unwrap();
        assert_eq!(replayed, every_kind());
        assert_eq!(report.upgraded_from, Some(1));
        assert!(!compact_path(&p).exists());
    }

    #[tokio::test]
    async fn a_new_journal_starts_with_the_header_and_a_torn_header_is_reset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        drop(Journal::open(&p).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), record::HEADER);
        std::fs::write(&p, &record::HEADER[..3]).unwrap();
        let (j, replayed, report) = Journal::open(&p).unwrap();
        assert!(replayed.is_empty());
        assert_eq!(report.torn_bytes, 3);
        j.append(&cmd(1)).await.unwrap();
        drop(j);
        let (_j, replayed, _) = Journal::open(&p).unwrap();
        assert_eq!(replayed, vec![cmd(1)]);
    }

    #[tokio::test]
    async fn a_journal_from_a_newer_build_is_refused_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        {
            let (j, _, _) = Journal::open(&p).unwrap();
            j.append(&cmd(1)).await.unwrap();
        }
        // A record kind this build does not know, with a good checksum.
        let mut bytes = std::fs::read(&p).unwrap();
        let payload = [77u8, 1, 2, 3];
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        record::encode_into(&mut bytes, &cmd(2));
        std::fs::write(&p, &bytes).unwrap();
        let e = Journal::open(&p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("record kind 77"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "left as it was");
        // A format version this build does not know.
        let mut newer = record::HEADER;
        newer[4] = 3;
        std::fs::write(&p, newer).unwrap();
        let e = Journal::open(&p).unwrap_err();
        assert!(e.to_string().contains("version 3"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), newer);
    }

    #[tokio::test]
    async fn every_kind_survives_append_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let (j, _, _) = Journal::open(&p).unwrap();
        for c in every_kind() {
            j.append(&c).await.unwrap();
        }
        let mut snap = j.snapshot(j.mark().await.unwrap()).unwrap();
        j.append(&cmd(7)).await.unwrap();
        for c in every_kind() {
            snap.push(&c).unwrap();
        }
        j.install(snap).await.unwrap();
        drop(j);
        let (_j, replayed, _) = Journal::open(&p).unwrap();
        let mut want = every_kind();
        want.push(cmd(7));
        assert_eq!(replayed, want);
    }
}
