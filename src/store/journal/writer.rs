//! The writer thread: it owns the file, gathers every waiting append into
//! one `write` and one `fdatasync` (group commit), cuts a failed write off
//! again, poisons the journal on a failed fsync, and performs rewrites and
//! compaction installs between appends.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use super::compaction::{compact_path, rewrite_path, Installed, Mark};
use super::{Job, MAX_BATCH};

/// The writer thread's state: the file, and how much of it is good.
pub(super) struct Writer {
    pub(super) file: File,
    /// Bytes of whole, written records (the file's length unless a write
    /// failed and could not be cut off).
    pub(super) len: u64,
    /// Bumped by every rewrite or install: a mark names the file it was taken on.
    pub(super) generation: u64,
    /// Set by a failed fsync: nothing written since can be trusted to be on disk.
    pub(super) poisoned: Option<String>,
    pub(super) path: PathBuf,
    pub(super) appended: Arc<AtomicU64>,
}

pub(super) fn copy_err(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

impl Writer {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Job>) {
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
                Job::Append(record, n, ack) => {
                    batch.clear();
                    acks.clear();
                    let mut records = n;
                    batch.extend_from_slice(&record);
                    acks.push(ack);
                    // Gather whatever else is already waiting: one fsync for all.
                    while acks.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(Job::Append(r, n, a)) => {
                                records += n;
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
                        self.appended.fetch_add(records, Ordering::Relaxed);
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

pub(super) fn sync_dir(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub(super) fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "journal writer stopped")
}
