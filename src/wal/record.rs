//! The byte layout of segment headers and records (docs/DISK-FORMAT.md has
//! the tables). Encoding appends to a buffer; parsing is bounds-checked and
//! never panics, whatever the bytes.

use crate::core::{EntryKind, Index, Term};

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"EMBRAFTW";
/// Version of the segment and record layout described here. Version 1
/// (one log per directory, no group ids) is not readable by this build.
pub(crate) const SEGMENT_FORMAT_VERSION: u32 = 2;
/// Checksum algorithm id stored in the segment header: CRC-32 (IEEE 802.3
/// polynomial, as computed by crc32fast).
pub(crate) const CHECKSUM_CRC32_IEEE: u32 = 1;
/// Bytes reserved for the segment header; records start here.
pub(crate) const SEGMENT_HEADER_LEN: usize = 64;
/// Bytes of a record header; the payload follows.
pub(crate) const RECORD_HEADER_LEN: usize = 40;
/// Every record starts and ends on this alignment.
pub(crate) const RECORD_ALIGN: usize = 8;
/// Payload length of a batch-commit record.
const COMMIT_PAYLOAD_LEN: usize = 8;

/// Rounds `len` up to the record alignment.
pub(crate) fn aligned(len: usize) -> usize {
    (len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Bytes a record with a payload of `payload_len` occupies on disk.
pub(crate) fn record_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + aligned(payload_len)
}

/// The smallest segment size (a multiple of 8) that holds a batch of one
/// entry of `entry_bytes` bytes with its hard state and commit records,
/// behind the segment header and the group's state restated at its first
/// write in the segment (a hard state, and snapshot metadata whose
/// membership names `membership_ids` node ids across its four lists). A
/// smaller segment refuses such a batch, which stops the node that wrote it.
pub fn segment_bytes_for_entry(entry_bytes: u64, membership_ids: usize) -> u64 {
    let meta = crate::core::SnapshotMeta {
        conf_state: crate::core::ConfState {
            voters: vec![0; membership_ids],
            ..Default::default()
        },
        ..Default::default()
    };
    let mut payload = Vec::new();
    encode_restate(&Default::default(), Some(&meta), &mut payload);
    let restate = record_len(payload.len()) as u64;
    payload.clear();
    crate::codec::encode_hard_state(&Default::default(), &mut payload);
    let hard_state = record_len(payload.len()) as u64;
    let commit = record_len(COMMIT_PAYLOAD_LEN) as u64;
    // `record_len` in u64, saturating: `entry_bytes` is the host's.
    let align = RECORD_ALIGN as u64 - 1;
    let entry =
        (RECORD_HEADER_LEN as u64).saturating_add(entry_bytes.saturating_add(align) & !align);
    entry.saturating_add(SEGMENT_HEADER_LEN as u64 + restate + hard_state + commit)
}

/// Encodes the payload of a group-start record: the group's hard state and
/// snapshot metadata (if any) as they stand before its first batch in a
/// segment. The hard state is length-prefixed so the snapshot needs no
/// length of its own.
pub(crate) fn encode_restate(
    hs: &crate::core::HardState,
    snapshot: Option<&crate::core::SnapshotMeta>,
    out: &mut Vec<u8>,
) {
    let at = out.len();
    out.extend_from_slice(&[0u8; 4]);
    crate::codec::encode_hard_state(hs, out);
    let hs_len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&hs_len.to_le_bytes());
    if let Some(s) = snapshot {
        crate::codec::encode_snapshot_meta(s, out);
    }
}

/// Decodes a group-start payload written by [`encode_restate`].
pub(crate) fn decode_restate(
    payload: &[u8],
) -> Result<(crate::core::HardState, Option<crate::core::SnapshotMeta>), String> {
    let hs_len = payload
        .get(..4)
        .map(|b| u32_at(b, 0) as usize)
        .ok_or("group start payload too short")?;
    let hs_bytes = payload
        .get(4..4 + hs_len)
        .ok_or("group start hard state runs past the payload")?;
    let hs = crate::codec::decode_hard_state(hs_bytes).map_err(|e| format!("hard state: {e}"))?;
    let rest = &payload[4 + hs_len..];
    let snapshot = if rest.is_empty() {
        None
    } else {
        Some(
            crate::codec::decode_snapshot_meta(rest)
                .map_err(|e| format!("snapshot metadata: {e}"))?,
        )
    };
    Ok((hs, snapshot))
}

/// The fixed header at offset 0 of every segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Sequence number of the segment; also its file name.
    pub seq: u64,
    /// Random per-segment value mixed into every record checksum, so bytes
    /// left over from an earlier life of the file never validate.
    pub salt: u64,
    /// Size of the segment file in bytes.
    pub segment_size: u64,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&CHECKSUM_CRC32_IEEE.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.salt.to_le_bytes());
        b[32..40].copy_from_slice(&self.segment_size.to_le_bytes());
        let crc = crc32fast::hash(&b[..SEGMENT_HEADER_LEN - 4]);
        b[SEGMENT_HEADER_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header, or says what is wrong with it.
    pub(crate) fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err("file shorter than a segment header".into());
        }
        let b = &b[..SEGMENT_HEADER_LEN];
        if b[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic".into());
        }
        if u32_at(b, SEGMENT_HEADER_LEN - 4) != crc32fast::hash(&b[..SEGMENT_HEADER_LEN - 4]) {
            return Err("segment header checksum mismatch".into());
        }
        let version = u32_at(b, 8);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(format!(
                "unsupported segment format version {version} (this build reads version {SEGMENT_FORMAT_VERSION} only)"
            ));
        }
        if u32_at(b, 12) != CHECKSUM_CRC32_IEEE {
            return Err("unsupported checksum algorithm".into());
        }
        if b[40..SEGMENT_HEADER_LEN - 4].iter().any(|&x| x != 0) {
            return Err("reserved header bytes are not zero".into());
        }
        Ok(SegmentHeader {
            seq: u64_at(b, 16),
            salt: u64_at(b, 24),
            segment_size: u64_at(b, 32),
        })
    }
}

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordType {
    /// A log entry: index, term and kind in the header, data as payload.
    Entry = 1,
    /// A hard state, payload encoded by `codec::encode_hard_state`.
    HardState = 2,
    /// Snapshot metadata, payload encoded by `codec::encode_snapshot_meta`.
    SnapshotMeta = 3,
    /// Closes a batch: the records before it back to the previous commit
    /// become valid together. Payload: the number of records it closes.
    Commit = 4,
    /// Opens a group's records in a segment, restating its state so that
    /// the group survives the deletion of every older segment. Index: the
    /// group's last index before it; payload: [`encode_restate`].
    GroupStart = 5,
    /// The group was removed: recovery forgets everything before it.
    Tombstone = 6,
}

impl RecordType {
    fn from_u8(tag: u8) -> Option<RecordType> {
        match tag {
            1 => Some(RecordType::Entry),
            2 => Some(RecordType::HardState),
            3 => Some(RecordType::SnapshotMeta),
            4 => Some(RecordType::Commit),
            5 => Some(RecordType::GroupStart),
            6 => Some(RecordType::Tombstone),
            _ => None,
        }
    }
}

/// The fields of a record header other than its checksum and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    pub kind: RecordType,
    /// Entry kind tag (entries only; zero otherwise).
    pub entry_kind: u8,
    /// How far the segment was known durable when this record was written.
    /// Recovery uses it to tell a torn tail (records written while earlier
    /// bytes were still unsynced) from corruption (a bad record that an
    /// already completed sync had covered).
    pub durable_mark: u32,
    /// The Raft group the record belongs to (zero for commit records).
    pub group: u64,
    pub index: Index,
    pub term: Term,
}

/// Appends one record (header, payload, zero padding) to `out`. The CRC
/// covers the salt, every header byte after the CRC, the payload and the
/// padding.
pub(crate) fn encode_record(out: &mut Vec<u8>, salt: u64, meta: RecordMeta, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]); // CRC, filled in below
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.push(meta.kind as u8);
    out.push(meta.entry_kind);
    out.extend_from_slice(&[0u8; 2]);
    out.extend_from_slice(&meta.durable_mark.to_le_bytes());
    out.extend_from_slice(&meta.group.to_le_bytes());
    out.extend_from_slice(&meta.index.to_le_bytes());
    out.extend_from_slice(&meta.term.to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(start + record_len(payload.len()), 0);
    let crc = record_crc(salt, &out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Last four bytes of every batch: a batch cut anywhere, even in its final
/// bytes, never reads back as whole (zeros there would).
const COMMIT_TRAILER: [u8; 4] = *b"CMIT";

/// Appends a batch-commit record closing `records` records.
pub(crate) fn encode_commit(out: &mut Vec<u8>, salt: u64, meta: RecordMeta, records: u32) {
    let mut payload = [0u8; COMMIT_PAYLOAD_LEN];
    payload[..4].copy_from_slice(&records.to_le_bytes());
    payload[4..].copy_from_slice(&COMMIT_TRAILER);
    encode_record(out, salt, meta, &payload);
}

/// The number of records a commit record's payload says it closes.
pub(crate) fn commit_count(payload: &[u8]) -> Option<u32> {
    if payload.len() != COMMIT_PAYLOAD_LEN || payload[4..] != COMMIT_TRAILER {
        return None;
    }
    Some(u32_at(payload, 0))
}

fn record_crc(salt: u64, covered: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(covered);
    h.finalize()
}

/// The result of looking for a record at one offset of a segment.
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    /// A record whose checksum verifies.
    Record {
        meta: RecordMeta,
        payload: &'a [u8],
        /// Bytes the record occupies (header, payload, padding).
        len: usize,
    },
    /// An all-zero header, or too little room left for a header: where
    /// writing stopped.
    End,
    /// Bytes that are not a valid record, and why.
    Invalid(&'static str),
}

/// Looks for a record at `pos` of `buf` (a segment's bytes, salted with
/// `salt`).
pub(crate) fn parse_record(buf: &[u8], pos: usize, salt: u64) -> Parsed<'_> {
    let Some(header) = buf.get(pos..pos.saturating_add(RECORD_HEADER_LEN)) else {
        return Parsed::End;
    };
    if header.iter().all(|&b| b == 0) {
        return Parsed::End;
    }
    let Some(kind) = RecordType::from_u8(header[8]) else {
        return Parsed::Invalid("unknown record type");
    };
    if header[10] != 0 || header[11] != 0 {
        return Parsed::Invalid("reserved record bytes are not zero");
    }
    let payload_len = u32_at(header, 4) as usize;
    let len = record_len(payload_len);
    let Some(record) = buf.get(pos..pos.saturating_add(len)) else {
        return Parsed::Invalid("record length runs past the end of the segment");
    };
    if u32_at(record, 0) != record_crc(salt, &record[4..]) {
        return Parsed::Invalid("record checksum mismatch");
    }
    let meta = RecordMeta {
        kind,
        entry_kind: header[9],
        durable_mark: u32_at(header, 12),
        group: u64_at(header, 16),
        index: u64_at(header, 24),
        term: u64_at(header, 32),
    };
    if kind == RecordType::Entry && EntryKind::from_u8(meta.entry_kind).is_none() {
        return Parsed::Invalid("unknown entry kind");
    }
    if kind != RecordType::Entry && meta.entry_kind != 0 {
        return Parsed::Invalid("entry kind set on a non-entry record");
    }
    Parsed::Record {
        meta,
        payload: &record[RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload_len],
        len,
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: RecordType) -> RecordMeta {
        RecordMeta {
            kind,
            entry_kind: 0,
            durable_mark: 64,
            group: 9,
            index: 7,
            term: 3,
        }
    }

    #[test]
    fn record_round_trip_and_alignment() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 42, meta(RecordType::Entry), b"hello");
        assert_eq!(buf.len(), 48);
        match parse_record(&buf, 0, 42) {
            Parsed::Record {
                meta: m,
                payload,
                len,
            } => {
                assert_eq!(m, meta(RecordType::Entry));
                assert_eq!(payload, b"hello");
                assert_eq!(len, 48);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(parse_record(&buf, 0, 43), Parsed::Invalid(_)));
        assert!(matches!(parse_record(&buf, 48, 42), Parsed::End));
        assert!(matches!(
            parse_record(&buf[..47], 0, 42),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn group_start_payload_round_trip() {
        let hs = crate::core::HardState {
            term: 4,
            vote: 2,
            commit: 9,
        };
        let snap = crate::core::SnapshotMeta {
            index: 8,
            term: 3,
            ..Default::default()
        };
        for snapshot in [None, Some(&snap)] {
            let mut payload = Vec::new();
            encode_restate(&hs, snapshot, &mut payload);
            assert_eq!(decode_restate(&payload), Ok((hs, snapshot.cloned())));
            // A cut right after the hard state reads as "no snapshot": the
            // record's checksum, not the payload, guards its length.
            for cut in (0..payload.len()).filter(|&c| c != 29) {
                assert!(decode_restate(&payload[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn segment_header_round_trip() {
        let h = SegmentHeader {
            seq: 5,
            salt: 99,
            segment_size: 1 << 20,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&c).is_err(), "bit {bit}");
        }
    }
}
