//! The append-only journal: a revocation is on disk, fsync'd, before it is
//! acknowledged; the journal is replayed at start and compacted to drop
//! expired rules.
//!
//! Record framing: `[len: u32 LE][crc32(payload): u32 LE][payload]`, the payload
//! a JSON [`RevocationCommand`] (fingerprints only, never raw tokens). A torn
//! or corrupt tail (a `kill -9` mid-write, a bad sector) is detected by a short
//! read or a CRC mismatch: replay keeps the good prefix, reports what it cut,
//! and truncates the file there so later appends follow good records.
//!
//! Group commit: one writer thread owns the file. It takes every append that
//! is waiting, writes them in one `write`, calls `fdatasync` once, and then
//! acknowledges all of them, so throughput grows with concurrency while each
//! acknowledgement still means "on disk". Compaction runs on the same thread,
//! so it is ordered with appends and none is lost: it writes the live records
//! to a temporary file, fsyncs it, renames it over the journal and fsyncs the
//! directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use super::RevocationCommand;

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
}

enum Job {
    Append(Vec<u8>, oneshot::Sender<io::Result<()>>),
    Rewrite(Vec<u8>, oneshot::Sender<io::Result<()>>),
}

/// A handle on the journal; cheap to share behind an `Arc`.
pub struct Journal {
    tx: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    path: PathBuf,
    /// Records appended since open or the last rewrite.
    appended: Arc<AtomicU64>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

fn encode_into(buf: &mut Vec<u8>, cmd: &RevocationCommand) -> io::Result<()> {
    let payload = serde_json::to_vec(cmd).map_err(io::Error::other)?;
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
    Ok(())
}

/// Decodes the good prefix of a journal, streaming (memory stays flat
/// whatever the journal's size): the commands, and the length of that prefix.
fn decode(reader: impl Read, mut each: impl FnMut(RevocationCommand)) -> io::Result<(u64, u64)> {
    let mut reader = io::BufReader::with_capacity(256 * 1024, reader);
    let mut records = 0u64;
    let mut good: u64 = 0;
    let mut head = [0u8; 8];
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
        match serde_json::from_slice::<RevocationCommand>(&payload) {
            Ok(cmd) => each(cmd),
            Err(_) => break,
        }
        records += 1;
        good += 8 + len as u64;
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
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let size = file.metadata()?.len();
        let (records, good) = decode(&mut file, each)?;
        let report = ReplayReport {
            records,
            torn_bytes: size - good,
        };
        if report.torn_bytes > 0 {
            file.set_len(good)?;
            file.sync_all()?;
        }
        drop(file);
        let file = OpenOptions::new().append(true).open(path)?;
        let appended = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let writer = {
            let path = path.to_path_buf();
            let appended = appended.clone();
            std::thread::Builder::new()
                .name("revgate-journal".into())
                .spawn(move || writer_loop(file, path, rx, appended))?
        };
        Ok((
            Journal {
                tx: std::sync::Mutex::new(Some(tx)),
                path: path.to_path_buf(),
                appended,
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
        tx.send(job)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "journal writer stopped"))
    }

    /// Appends one command; returns once it is fsync'd.
    pub async fn append(&self, cmd: &RevocationCommand) -> io::Result<()> {
        let mut record = Vec::with_capacity(128);
        encode_into(&mut record, cmd)?;
        let (done, wait) = oneshot::channel();
        self.send(Job::Append(record, done))?;
        wait.await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "journal writer stopped"))?
    }

    /// Replaces the journal's content with exactly these commands (compaction,
    /// or emptying an outbox once it has been replayed elsewhere), atomically.
    pub async fn rewrite(
        &self,
        live: impl IntoIterator<Item = RevocationCommand>,
    ) -> io::Result<()> {
        let mut bytes = Vec::new();
        for cmd in live {
            encode_into(&mut bytes, &cmd)?;
        }
        let (done, wait) = oneshot::channel();
        self.send(Job::Rewrite(bytes, done))?;
        wait.await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "journal writer stopped"))?
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

fn writer_loop(mut file: File, path: PathBuf, rx: mpsc::Receiver<Job>, appended: Arc<AtomicU64>) {
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
                let result = file.write_all(&batch).and_then(|_| file.sync_data());
                if result.is_ok() {
                    appended.fetch_add(acks.len() as u64, Ordering::Relaxed);
                }
                for ack in acks.drain(..) {
                    let r = match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    };
                    let _ = ack.send(r);
                }
            }
            Job::Rewrite(bytes, ack) => {
                let result = rewrite_file(&path, &bytes).map(|f| {
                    file = f;
                    appended.store(0, Ordering::Relaxed);
                });
                let _ = ack.send(result);
            }
        }
    }
}

fn rewrite_file(path: &Path, bytes: &[u8]) -> io::Result<File> {
    let tmp = path.with_extension("compact");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    OpenOptions::new().append(true).open(path)
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
                torn_bytes: 0
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
        encode_into(&mut extra, &cmd(9)).unwrap();
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
}
