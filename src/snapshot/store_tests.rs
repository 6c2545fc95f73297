use super::*;
use crate::fs_util::Scratch;

fn names(store: &SnapshotStore) -> Vec<String> {
    list_files(store.dir()).unwrap()
}

fn take(store: &SnapshotStore, index: u64, term: u64, data: &[u8]) -> SnapshotFile {
    let mut temp = store.create(index, term).unwrap();
    temp.write(data).unwrap();
    temp.finish().unwrap()
}

#[test]
fn names_round_trip_and_nothing_else_parses() {
    let id = SnapshotId {
        index: 42,
        term: 7,
        len: 1 << 40,
        crc: 0xdead_beef,
    };
    let name = id.file_name();
    assert_eq!(
        name,
        "snap-00000000000000000042-00000000000000000007-00000001099511627776-deadbeef.snap"
    );
    assert_eq!(SnapshotId::parse(&name), Some(id));
    for other in [
        name.replace(".snap", ".partial"),
        name.replace("deadbeef", "DEADBEEF"),
        name.replace("-00000000000000000042", "-42"),
        format!("{name}.tmp"),
        "snap-1-2-3-4.snap".to_string(),
        "LOCK".to_string(),
    ] {
        assert_eq!(SnapshotId::parse(&other), None, "{other}");
    }
}

#[test]
fn a_taken_snapshot_is_named_by_its_length_and_checksum() {
    let scratch = Scratch::new("take");
    let (store, recovery) = SnapshotStore::open(&scratch.0, None).unwrap();
    assert!(recovery.current.is_none());
    let mut temp = store.create(10, 2).unwrap();
    temp.write(b"hello ").unwrap();
    // The host may also write through the path itself.
    let mut by_path = OpenOptions::new().append(true).open(temp.path()).unwrap();
    by_path.write_all(b"world").unwrap();
    drop(by_path);
    let file = temp.finish().unwrap();
    assert_eq!(
        file.id,
        SnapshotId {
            index: 10,
            term: 2,
            len: 11,
            crc: crc32fast::hash(b"hello world"),
        }
    );
    assert_eq!(fs::read(&file.path).unwrap(), b"hello world");
    assert_eq!(
        names(&store),
        vec![file.id.file_name()],
        "no temporary file left"
    );
    assert_eq!(store.current(), None, "stored, but not recorded yet");
}

/// Bytes given to `write` are checksummed on the way, so sealing does not
/// read the file back: a change made behind the writer's back (found here
/// by listing the folder, not by asking for the path) does not reach the
/// checksum. Asking for the path brings the read-back back.
#[test]
fn a_snapshot_written_through_the_writer_is_checksummed_as_it_is_written() {
    let scratch = Scratch::new("streamed");
    let (store, _) = SnapshotStore::open(&scratch.0, None).unwrap();
    let overwrite_temp_file = |store: &SnapshotStore, bytes: &[u8]| {
        let temp_name = names(store)
            .into_iter()
            .find(|name| name.ends_with(".tmp"))
            .unwrap();
        fs::write(store.dir().join(temp_name), bytes).unwrap();
    };

    let mut temp = store.create(10, 2).unwrap();
    temp.write(b"hello ").unwrap();
    temp.write(b"world").unwrap();
    overwrite_temp_file(&store, b"HELLO WORLD");
    let id = temp.seal().unwrap();
    assert_eq!((id.len, id.crc), (11, crc32fast::hash(b"hello world")));
    temp.abort();

    let mut temp = store.create(11, 2).unwrap();
    temp.write(b"hello world").unwrap();
    let _ = temp.path();
    overwrite_temp_file(&store, b"HELLO WORLD");
    let id = temp.seal().unwrap();
    assert_eq!((id.len, id.crc), (11, crc32fast::hash(b"HELLO WORLD")));
    temp.abort();
}

#[test]
fn an_aborted_snapshot_leaves_nothing() {
    let scratch = Scratch::new("abort");
    let (store, _) = SnapshotStore::open(&scratch.0, None).unwrap();
    let mut temp = store.create(10, 2).unwrap();
    temp.write(b"half").unwrap();
    temp.abort();
    assert!(names(&store).is_empty());
}

#[test]
fn chunks_are_taken_in_order_only() {
    let scratch = Scratch::new("chunks");
    let (store, _) = SnapshotStore::open(&scratch.0, None).unwrap();
    let data = b"0123456789";
    let id = SnapshotId {
        index: 5,
        term: 1,
        len: 10,
        crc: crc32fast::hash(data),
    };
    let mut partial = store.receive(id).unwrap();
    assert_eq!(
        partial.write_chunk(4, &data[4..8]).unwrap(),
        ChunkOutcome::Gap
    );
    assert_eq!(partial.written(), 0);
    assert_eq!(
        partial.write_chunk(0, &data[..4]).unwrap(),
        ChunkOutcome::Written
    );
    assert_eq!(
        partial.write_chunk(0, &data[..4]).unwrap(),
        ChunkOutcome::Duplicate
    );
    assert_eq!(
        partial.write_chunk(2, &data[2..6]).unwrap(),
        ChunkOutcome::Duplicate
    );
    assert_eq!(
        partial.write_chunk(4, &[]).unwrap(),
        ChunkOutcome::Duplicate
    );
    assert!(matches!(
        partial.write_chunk(8, b"too long"),
        Err(SnapshotError::Invalid(_))
    ));
    assert_eq!(
        partial.write_chunk(4, &data[4..]).unwrap(),
        ChunkOutcome::Written
    );
    assert!(partial.is_complete());
    let file = partial.finish().unwrap();
    assert_eq!(file.id, id);
    assert_eq!(fs::read(&file.path).unwrap(), data);
    assert_eq!(names(&store), vec![id.file_name()]);
}

#[test]
fn a_received_snapshot_that_fails_its_checksum_is_refused_and_deleted() {
    let scratch = Scratch::new("bad-crc");
    let (store, _) = SnapshotStore::open(&scratch.0, None).unwrap();
    let id = SnapshotId {
        index: 5,
        term: 1,
        len: 4,
        crc: crc32fast::hash(b"abcd"),
    };
    let mut partial = store.receive(id).unwrap();
    partial.write_chunk(0, b"abce").unwrap();
    let err = partial.finish().unwrap_err();
    assert!(
        err.to_string().contains("CRC-32") && err.to_string().contains("announced"),
        "{err}"
    );
    assert!(names(&store).is_empty(), "the partial file is deleted");
}

#[test]
fn recording_deletes_older_snapshots_but_not_pinned_ones() {
    let scratch = Scratch::new("record");
    let (store, _) = SnapshotStore::open(&scratch.0, None).unwrap();
    let first = take(&store, 10, 1, b"first");
    store.record(&first).unwrap();
    let pin = store.pin(&first);
    let second = take(&store, 20, 1, b"second");
    let removed = store.record(&second).unwrap();
    assert!(removed.is_empty(), "the first is pinned");
    assert_eq!(names(&store).len(), 2);
    let third = take(&store, 30, 1, b"third");
    assert!(!store.discard(&second).unwrap(), "the current one is kept");
    drop(pin.clone());
    assert_eq!(names(&store).len(), 3, "a clone of the pin still holds it");
    drop(pin);
    assert_eq!(
        names(&store),
        vec![second.id.file_name(), third.id.file_name()],
        "released and superseded: deleted"
    );
    assert!(store.discard(&third).unwrap(), "never recorded: deleted");
    assert_eq!(store.current(), Some(second));
}

#[test]
fn recovery_keeps_the_recorded_snapshot_and_deletes_the_rest() {
    let scratch = Scratch::new("recover");
    let (store, _) = SnapshotStore::open(&scratch.0, None).unwrap();
    let old = take(&store, 10, 1, b"old");
    let recorded = take(&store, 20, 2, b"recorded");
    let orphan = take(&store, 30, 2, b"renamed, never recorded");
    let mut temp = store.create(40, 2).unwrap();
    temp.write(b"being written").unwrap();
    drop(temp);
    let mut partial = store
        .receive(SnapshotId {
            index: 50,
            term: 3,
            len: 100,
            crc: 0,
        })
        .unwrap();
    partial.write_chunk(0, b"half").unwrap();
    drop(partial);
    drop(store);

    let (store, recovery) = SnapshotStore::open(&scratch.0, Some((20, 2))).unwrap();
    assert_eq!(recovery.current, Some(recorded.clone()));
    assert_eq!(recovery.removed.len(), 4, "{:?}", recovery.removed);
    assert!(recovery.removed.contains(&old.path) && recovery.removed.contains(&orphan.path));
    assert_eq!(names(&store), vec![recorded.id.file_name()]);
    assert_eq!(store.current(), Some(recorded));
}

#[test]
fn recovery_refuses_a_missing_or_damaged_snapshot_and_deletes_nothing() {
    let scratch = Scratch::new("damaged");
    let (store, _) = SnapshotStore::open(&scratch.0, None).unwrap();
    let file = take(&store, 20, 2, b"recorded bytes");
    let other = take(&store, 10, 1, b"older");
    drop(store);

    let err = SnapshotStore::open(&scratch.0, Some((30, 2))).unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Corrupt { reason, .. } if reason.contains("index 30")),
        "{err}"
    );

    // Same length, one byte changed.
    let mut bytes = fs::read(&file.path).unwrap();
    bytes[3] ^= 1;
    fs::write(&file.path, &bytes).unwrap();
    let err = SnapshotStore::open(&scratch.0, Some((20, 2))).unwrap_err();
    assert!(err.to_string().contains("CRC-32"), "{err}");

    bytes.pop();
    fs::write(&file.path, &bytes).unwrap();
    let err = SnapshotStore::open(&scratch.0, Some((20, 2))).unwrap_err();
    assert!(err.to_string().contains("bytes"), "{err}");
    assert!(
        other.path.exists(),
        "nothing deleted while the state is in doubt"
    );
}

/// Two writers of the same state at one index publish one file name. The
/// one found stale must not delete the file the other is recording, in
/// either order of record and discard, and a restart must find it.
#[test]
fn two_writers_of_one_snapshot_share_its_file() {
    for discard_first in [true, false] {
        let scratch = Scratch::new("same-name");
        let (store, _) = SnapshotStore::open(&scratch.0, None).unwrap();
        let winner = take(&store, 10, 1, b"same state");
        let loser = take(&store, 10, 1, b"same state");
        assert_eq!(winner, loser, "one name for both");
        if discard_first {
            assert!(!store.discard(&loser).unwrap(), "the winner still holds it");
            store.record(&winner).unwrap();
        } else {
            store.record(&winner).unwrap();
            assert!(!store.discard(&loser).unwrap(), "current: kept");
        }
        assert_eq!(names(&store), vec![winner.id.file_name()]);
        drop(store);
        let (_, recovery) = SnapshotStore::open(&scratch.0, Some((10, 1))).unwrap();
        assert_eq!(recovery.current, Some(winner));
    }

    // Neither recorded: the file goes with the last one to let go.
    let scratch = Scratch::new("same-name-dropped");
    let (store, _) = SnapshotStore::open(&scratch.0, None).unwrap();
    let first = take(&store, 10, 1, b"same state");
    let second = take(&store, 10, 1, b"same state");
    assert!(!store.discard(&first).unwrap());
    assert!(store.discard(&second).unwrap());
    assert!(names(&store).is_empty());
}

#[test]
fn the_folder_and_its_parents_are_created_with_the_first_snapshot() {
    let scratch = Scratch::new("lazy");
    let folder = Path::new("groups").join("7").join(SNAPSHOT_DIR);
    let (store, recovery) = SnapshotStore::open_in(&scratch.0, &folder, None).unwrap();
    assert!(recovery.current.is_none() && recovery.removed.is_empty());
    assert!(
        !scratch.0.join("groups").exists(),
        "opening creates no folder"
    );
    let received = SnapshotId {
        index: 3,
        term: 1,
        len: 2,
        crc: crc32fast::hash(b"ok"),
    };
    let mut partial = store.receive(received).unwrap();
    partial.write_chunk(0, b"ok").unwrap();
    let file = partial.finish().unwrap();
    store.record(&file).unwrap();
    assert_eq!(
        file.path,
        scratch.0.join(&folder).join(received.file_name())
    );
    let taken = take(&store, 5, 1, b"taken too");
    store.record(&taken).unwrap();
    assert_eq!(names(&store), vec![taken.id.file_name()]);
    drop(store);
    let (_, recovery) = SnapshotStore::open_in(&scratch.0, &folder, Some((5, 1))).unwrap();
    assert_eq!(recovery.current, Some(taken));
}

#[test]
fn a_recorded_snapshot_without_its_folder_is_refused() {
    let scratch = Scratch::new("nofolder");
    let err = SnapshotStore::open_in(&scratch.0, Path::new("gone"), Some((4, 1))).unwrap_err();
    assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
    assert!(!scratch.0.join("gone").exists());
}
