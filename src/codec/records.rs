//! Encodings of the records the WAL stores and messages embed: entries,
//! hard state, membership and snapshot metadata.
//!
//! Each `encode_*` appends to `out`; each `decode_*` takes exactly one
//! encoded value (trailing bytes are an error).

use super::error::DecodeError;
use super::primitives::{bytes_len, ids_len, put_bytes, put_ids, put_u64, put_u8, Reader};
use super::FORMAT_VERSION;
use crate::core::{ConfState, Entry, EntryKind, HardState, SnapshotMeta};

/// Size of the version byte that starts every encoding.
pub(crate) const VERSION_LEN: usize = 1;

pub(crate) fn check_version(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    let at = r.position();
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::at(at, "unsupported format version"));
    }
    Ok(())
}

pub(crate) fn put_entry_body(out: &mut Vec<u8>, e: &Entry) {
    put_u64(out, e.index);
    put_u64(out, e.term);
    put_u8(out, e.kind as u8);
    put_bytes(out, &e.data);
}

/// Smallest encoded size of an entry body (index, term, kind, empty data).
pub(crate) const MIN_ENTRY_BODY_LEN: usize = 8 + 8 + 1 + 4;

/// Exact size of what [`put_entry_body`] writes.
pub(crate) fn entry_body_len(e: &Entry) -> usize {
    8 + 8 + 1 + bytes_len(&e.data)
}

pub(crate) fn read_entry_body(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let index = r.u64()?;
    let term = r.u64()?;
    let kind_at = r.position();
    let kind = EntryKind::from_u8(r.u8()?)
        .ok_or_else(|| DecodeError::at(kind_at, "unknown entry kind"))?;
    let data = r.bytes()?;
    Ok(Entry {
        index,
        term,
        kind,
        data,
    })
}

pub(crate) fn put_conf_state_body(out: &mut Vec<u8>, cs: &ConfState) {
    put_ids(out, &cs.voters);
    put_ids(out, &cs.learners);
    put_ids(out, &cs.voters_outgoing);
    put_ids(out, &cs.learners_next);
    put_u8(out, cs.auto_leave as u8);
}

/// Exact size of what [`put_conf_state_body`] writes.
pub(crate) fn conf_state_body_len(cs: &ConfState) -> usize {
    ids_len(&cs.voters)
        + ids_len(&cs.learners)
        + ids_len(&cs.voters_outgoing)
        + ids_len(&cs.learners_next)
        + 1
}

pub(crate) fn read_conf_state_body(r: &mut Reader<'_>) -> Result<ConfState, DecodeError> {
    Ok(ConfState {
        voters: r.ids()?,
        learners: r.ids()?,
        voters_outgoing: r.ids()?,
        learners_next: r.ids()?,
        auto_leave: r.bool()?,
    })
}

pub(crate) fn put_snapshot_meta_body(out: &mut Vec<u8>, m: &SnapshotMeta) {
    put_u64(out, m.index);
    put_u64(out, m.term);
    put_conf_state_body(out, &m.conf_state);
}

/// Exact size of what [`put_snapshot_meta_body`] writes.
pub(crate) fn snapshot_meta_body_len(m: &SnapshotMeta) -> usize {
    8 + 8 + conf_state_body_len(&m.conf_state)
}

pub(crate) fn read_snapshot_meta_body(r: &mut Reader<'_>) -> Result<SnapshotMeta, DecodeError> {
    Ok(SnapshotMeta {
        index: r.u64()?,
        term: r.u64()?,
        conf_state: read_conf_state_body(r)?,
    })
}

/// Runs `body` on a versioned, complete encoding.
fn decode_versioned<T>(
    buf: &[u8],
    body: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut r = Reader::new(buf);
    check_version(&mut r)?;
    let value = body(&mut r)?;
    r.finish()?;
    Ok(value)
}

pub fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    put_u8(out, FORMAT_VERSION);
    put_entry_body(out, e);
}

pub fn decode_entry(buf: &[u8]) -> Result<Entry, DecodeError> {
    decode_versioned(buf, read_entry_body)
}

pub fn encode_hard_state(hs: &HardState, out: &mut Vec<u8>) {
    put_u8(out, FORMAT_VERSION);
    put_u64(out, hs.term);
    put_u64(out, hs.vote);
    put_u64(out, hs.commit);
}

pub fn decode_hard_state(buf: &[u8]) -> Result<HardState, DecodeError> {
    decode_versioned(buf, |r| {
        Ok(HardState {
            term: r.u64()?,
            vote: r.u64()?,
            commit: r.u64()?,
        })
    })
}

pub fn encode_conf_state(cs: &ConfState, out: &mut Vec<u8>) {
    put_u8(out, FORMAT_VERSION);
    put_conf_state_body(out, cs);
}

pub fn decode_conf_state(buf: &[u8]) -> Result<ConfState, DecodeError> {
    decode_versioned(buf, read_conf_state_body)
}

pub fn encode_snapshot_meta(m: &SnapshotMeta, out: &mut Vec<u8>) {
    put_u8(out, FORMAT_VERSION);
    put_snapshot_meta_body(out, m);
}

pub fn decode_snapshot_meta(buf: &[u8]) -> Result<SnapshotMeta, DecodeError> {
    decode_versioned(buf, read_snapshot_meta_body)
}
