//! A full disk: acknowledged segments are the first thing given up, and a
//! checkpoint that cannot be written does not keep them on disk.

use super::record::{position, segment_of};
use super::tests::{cfg, drain, files};
use super::*;

#[test]
fn reclaim_deletes_acknowledged_segments_including_the_writers_own() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(cfg(dir.path(), 1 << 20)).unwrap();
    let mut pos = Vec::new();
    for i in 0..20u8 {
        pos.extend(j.append(&[&[i; 100]]).unwrap());
    }
    // Nothing acknowledged: nothing may go.
    assert!(!j.reclaim_for_test());
    assert_eq!(drain(&j, pos[0]).len(), 20);
    j.ack_before(j.end()).unwrap();
    // Every record sits in the writer's segment, so a normal ack keeps it.
    assert_eq!(j.segments(), 1);
    assert!(j.disk_bytes() > 0);
    assert!(j.reclaim_for_test());
    assert_eq!(j.disk_bytes(), 0);
    let on_disk = files(dir.path());
    assert_eq!(
        on_disk,
        vec![(2, 0)],
        "only the fresh, empty writer segment is left"
    );
    // Appends continue after it with larger positions, and read back.
    let next = j.append(&[b"after the reclaim"]).unwrap()[0];
    assert!(next > pos[19]);
    assert_eq!(segment_of(next), 2);
    assert_eq!(
        drain(&j, j.checkpoint()),
        vec![(next, b"after the reclaim".to_vec())]
    );
    drop(j);
    // Recovery starts at the oldest segment left: the acknowledged records are
    // gone and the new one is recovered.
    let (j, rec) = Journal::open(cfg(dir.path(), 1 << 20)).unwrap();
    assert_eq!(rec.records, 1);
    assert_eq!(drain(&j, rec.start).len(), 1);
    assert_eq!(rec.start, position(2, 0));
}

#[test]
fn reclaim_keeps_a_segment_with_unacknowledged_records() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(cfg(dir.path(), 1 << 20)).unwrap();
    let a = j.append(&[b"acked"]).unwrap()[0];
    let b = j.append(&[b"pending"]).unwrap()[0];
    j.ack_before(b).unwrap();
    assert!(!j.reclaim_for_test());
    assert_eq!(files(dir.path()).len(), 1);
    assert_eq!(drain(&j, a).len(), 2, "both records still readable");
}

#[test]
fn acknowledged_segments_are_deleted_even_when_the_checkpoint_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(cfg(dir.path(), 100)).unwrap();
    let mut pos = Vec::new();
    for i in 0..5u8 {
        pos.extend(j.append(&[&[i; 40]]).unwrap());
    }
    // A directory in the way of the temporary checkpoint file makes its write fail.
    std::fs::create_dir(dir.path().join(checkpoint::TMP)).unwrap();
    assert!(j.ack_before(pos[3]).is_err());
    let left: Vec<u64> = files(dir.path()).iter().map(|f| f.0).collect();
    assert_eq!(
        left,
        vec![4, 5],
        "segments before the new checkpoint are gone"
    );
    assert_eq!(j.checkpoint(), pos[3]);
    // The same position again retries the failed checkpoint write.
    std::fs::remove_dir(dir.path().join(checkpoint::TMP)).unwrap();
    j.ack_before(pos[3]).unwrap();
    drop(j);
    let (_, rec) = Journal::open(cfg(dir.path(), 100)).unwrap();
    assert_eq!((rec.start, rec.records), (pos[3], 2));
}
