//! The journal's tests: replay, torn tails, upgrade, group commit, compaction.

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
