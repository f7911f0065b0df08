//! Replay: the streaming decoder of a journal's good prefix (torn or
//! corrupt tails cut, undecodable good records refused), the cut itself,
//! and the one-pass upgrade of a version-1 (JSON) file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::compaction::compact_path;
use super::writer::sync_dir;
use super::{record, ReplayReport, MAX_RECORD};
use crate::store::RevocationCommand;

/// Which record format a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
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
pub(super) fn decode(
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
pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
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

/// Replays the journal at `path` into `each`, cuts a torn tail, writes the
/// header of a new file and upgrades a version-1 file; returns the length of
/// the good prefix (where appends go on) and what was found.
pub(super) fn replay(
    path: &Path,
    mut each: impl FnMut(RevocationCommand),
) -> io::Result<(u64, ReplayReport)> {
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
pub(super) fn upgrade_v1(
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
