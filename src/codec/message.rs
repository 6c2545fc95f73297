//! The encoding of peer messages: a version byte, a tag naming the
//! [`MessageBody`] variant, the common header (`from`, `to`, `term`), then
//! the variant's fields in declaration order. docs/WIRE.md describes the
//! layout byte by byte; keep the two in step.
//!
//! Decoding is purely structural: it checks that the bytes are a well-formed
//! encoding, not that the message makes sense to Raft (that is the core's
//! job). Every well-formed input has exactly one decoding and re-encodes to
//! the same bytes.

use super::error::DecodeError;
use super::primitives::{bytes_len, put_bytes, put_len, put_u32, put_u64, put_u8, Reader};
use super::records::{
    check_version, entry_body_len, put_entry_body, put_snapshot_meta_body, read_entry_body,
    read_snapshot_meta_body, snapshot_meta_body_len, MIN_ENTRY_BODY_LEN, VERSION_LEN,
};
use super::FORMAT_VERSION;
use crate::core::{Message, MessageBody};

/// The tag byte of each [`MessageBody`] variant.
///
/// These values are part of the wire format and are fixed forever: a tag is
/// never renumbered or reused, and a new variant takes the next free value.
/// Zero is deliberately unassigned so that a zero-filled buffer never
/// decodes as a message.
mod tag {
    pub const PRE_VOTE: u8 = 1;
    pub const PRE_VOTE_RESPONSE: u8 = 2;
    pub const VOTE: u8 = 3;
    pub const VOTE_RESPONSE: u8 = 4;
    pub const APPEND: u8 = 5;
    pub const APPEND_RESPONSE: u8 = 6;
    pub const HEARTBEAT: u8 = 7;
    pub const HEARTBEAT_RESPONSE: u8 = 8;
    pub const TIMEOUT_NOW: u8 = 9;
    pub const READ_INDEX: u8 = 10;
    pub const READ_INDEX_RESPONSE: u8 = 11;
    pub const INSTALL_SNAPSHOT: u8 = 12;
    pub const INSTALL_SNAPSHOT_RESPONSE: u8 = 13;
    pub const QUIESCE: u8 = 14;
    pub const WAKE_UP: u8 = 15;
}

/// Version byte, tag byte, then `from`, `to` and `term`.
const HEADER_LEN: usize = VERSION_LEN + 1 + 8 + 8 + 8;

fn tag_of(body: &MessageBody) -> u8 {
    match body {
        MessageBody::PreVote { .. } => tag::PRE_VOTE,
        MessageBody::PreVoteResponse { .. } => tag::PRE_VOTE_RESPONSE,
        MessageBody::Vote { .. } => tag::VOTE,
        MessageBody::VoteResponse { .. } => tag::VOTE_RESPONSE,
        MessageBody::Append { .. } => tag::APPEND,
        MessageBody::AppendResponse { .. } => tag::APPEND_RESPONSE,
        MessageBody::Heartbeat { .. } => tag::HEARTBEAT,
        MessageBody::HeartbeatResponse { .. } => tag::HEARTBEAT_RESPONSE,
        MessageBody::TimeoutNow => tag::TIMEOUT_NOW,
        MessageBody::ReadIndex { .. } => tag::READ_INDEX,
        MessageBody::ReadIndexResponse { .. } => tag::READ_INDEX_RESPONSE,
        MessageBody::InstallSnapshot { .. } => tag::INSTALL_SNAPSHOT,
        MessageBody::InstallSnapshotResponse { .. } => tag::INSTALL_SNAPSHOT_RESPONSE,
        MessageBody::Quiesce { .. } => tag::QUIESCE,
        MessageBody::WakeUp => tag::WAKE_UP,
    }
}

/// Appends the encoding of `msg` to `out`.
///
/// # Panics
///
/// If an entry payload, the snapshot chunk, or the entry list has more than
/// `u32::MAX` bytes or items, which the format cannot represent. The layers
/// above bound message sizes far below that.
pub fn encode_message(msg: &Message, out: &mut Vec<u8>) {
    out.reserve(encoded_message_len(msg));
    put_u8(out, FORMAT_VERSION);
    put_u8(out, tag_of(&msg.body));
    put_u64(out, msg.from);
    put_u64(out, msg.to);
    put_u64(out, msg.term);
    match &msg.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => {
            put_u64(out, *last_index);
            put_u64(out, *last_term);
        }
        MessageBody::PreVoteResponse { reject } | MessageBody::VoteResponse { reject } => {
            put_u8(out, *reject as u8);
        }
        MessageBody::Vote {
            last_index,
            last_term,
            transfer,
        } => {
            put_u64(out, *last_index);
            put_u64(out, *last_term);
            put_u8(out, *transfer as u8);
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            put_u64(out, *prev_index);
            put_u64(out, *prev_term);
            put_len(out, entries.len());
            for entry in entries {
                put_entry_body(out, entry);
            }
            put_u64(out, *commit);
        }
        MessageBody::AppendResponse {
            reject,
            index,
            hint_index,
            hint_term,
        } => {
            put_u8(out, *reject as u8);
            put_u64(out, *index);
            put_u64(out, *hint_index);
            put_u64(out, *hint_term);
        }
        MessageBody::Heartbeat { commit, context } => {
            put_u64(out, *commit);
            put_u64(out, *context);
        }
        MessageBody::HeartbeatResponse { context } | MessageBody::ReadIndex { context } => {
            put_u64(out, *context);
        }
        MessageBody::Quiesce { commit } => put_u64(out, *commit),
        MessageBody::TimeoutNow | MessageBody::WakeUp => {}
        MessageBody::ReadIndexResponse {
            index,
            context,
            reject,
        } => {
            put_u64(out, *index);
            put_u64(out, *context);
            put_u8(out, *reject as u8);
        }
        MessageBody::InstallSnapshot {
            meta,
            offset,
            total_len,
            checksum,
            data,
        } => {
            put_snapshot_meta_body(out, meta);
            put_u64(out, *offset);
            put_u64(out, *total_len);
            put_u32(out, *checksum);
            put_bytes(out, data);
        }
        MessageBody::InstallSnapshotResponse {
            index,
            next_offset,
            reject,
        } => {
            put_u64(out, *index);
            put_u64(out, *next_offset);
            put_u8(out, *reject as u8);
        }
    }
}

/// The exact number of bytes [`encode_message`] appends for `msg`, computed
/// without encoding (one pass over the entry list, nothing copied), so that
/// callers can size buffers and frames up front.
pub fn encoded_message_len(msg: &Message) -> usize {
    HEADER_LEN + body_len(&msg.body)
}

/// Size of the fields after the header.
fn body_len(body: &MessageBody) -> usize {
    match body {
        MessageBody::PreVote { .. } => 8 + 8,
        MessageBody::PreVoteResponse { .. } | MessageBody::VoteResponse { .. } => 1,
        MessageBody::Vote { .. } => 8 + 8 + 1,
        MessageBody::Append { entries, .. } => {
            8 + 8 + 4 + entries.iter().map(entry_body_len).sum::<usize>() + 8
        }
        MessageBody::AppendResponse { .. } => 1 + 8 + 8 + 8,
        MessageBody::Heartbeat { .. } => 8 + 8,
        MessageBody::HeartbeatResponse { .. }
        | MessageBody::ReadIndex { .. }
        | MessageBody::Quiesce { .. } => 8,
        MessageBody::TimeoutNow | MessageBody::WakeUp => 0,
        MessageBody::ReadIndexResponse { .. } => 8 + 8 + 1,
        MessageBody::InstallSnapshot { meta, data, .. } => {
            snapshot_meta_body_len(meta) + 8 + 8 + 4 + bytes_len(data)
        }
        MessageBody::InstallSnapshotResponse { .. } => 8 + 8 + 1,
    }
}

/// Decodes exactly one message occupying all of `buf`.
///
/// Fails, never panics, on anything that is not a well-formed encoding:
/// an unsupported version, an unknown tag, truncation, trailing bytes, a
/// boolean other than 0 or 1, an unknown entry kind, or a length or count
/// that would run past the end of the input (checked before allocating).
pub fn decode_message(buf: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader::new(buf);
    check_version(&mut r)?;
    let tag_at = r.position();
    // The tag is checked before the header is read so that an unknown tag is
    // reported as such even when the rest of the input is short.
    let read_body =
        body_reader(r.u8()?).ok_or_else(|| DecodeError::at(tag_at, "unknown message tag"))?;
    let from = r.u64()?;
    let to = r.u64()?;
    let term = r.u64()?;
    let body = read_body(&mut r)?;
    r.finish()?;
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

type BodyReader = fn(&mut Reader<'_>) -> Result<MessageBody, DecodeError>;

/// The decoder of the fields after the header for a tag, or `None` for an
/// unknown tag. Fields are read in the order they are written, which is the
/// order of the struct literals below.
fn body_reader(tag: u8) -> Option<BodyReader> {
    let reader: BodyReader = match tag {
        tag::PRE_VOTE => |r| {
            Ok(MessageBody::PreVote {
                last_index: r.u64()?,
                last_term: r.u64()?,
            })
        },
        tag::PRE_VOTE_RESPONSE => |r| Ok(MessageBody::PreVoteResponse { reject: r.bool()? }),
        tag::VOTE => |r| {
            Ok(MessageBody::Vote {
                last_index: r.u64()?,
                last_term: r.u64()?,
                transfer: r.bool()?,
            })
        },
        tag::VOTE_RESPONSE => |r| Ok(MessageBody::VoteResponse { reject: r.bool()? }),
        tag::APPEND => |r| {
            let prev_index = r.u64()?;
            let prev_term = r.u64()?;
            let count = r.count(MIN_ENTRY_BODY_LEN)?;
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                entries.push(read_entry_body(r)?);
            }
            Ok(MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit: r.u64()?,
            })
        },
        tag::APPEND_RESPONSE => |r| {
            Ok(MessageBody::AppendResponse {
                reject: r.bool()?,
                index: r.u64()?,
                hint_index: r.u64()?,
                hint_term: r.u64()?,
            })
        },
        tag::HEARTBEAT => |r| {
            Ok(MessageBody::Heartbeat {
                commit: r.u64()?,
                context: r.u64()?,
            })
        },
        tag::HEARTBEAT_RESPONSE => |r| Ok(MessageBody::HeartbeatResponse { context: r.u64()? }),
        tag::TIMEOUT_NOW => |_| Ok(MessageBody::TimeoutNow),
        tag::QUIESCE => |r| Ok(MessageBody::Quiesce { commit: r.u64()? }),
        tag::WAKE_UP => |_| Ok(MessageBody::WakeUp),
        tag::READ_INDEX => |r| Ok(MessageBody::ReadIndex { context: r.u64()? }),
        tag::READ_INDEX_RESPONSE => |r| {
            Ok(MessageBody::ReadIndexResponse {
                index: r.u64()?,
                context: r.u64()?,
                reject: r.bool()?,
            })
        },
        tag::INSTALL_SNAPSHOT => |r| {
            Ok(MessageBody::InstallSnapshot {
                meta: read_snapshot_meta_body(r)?,
                offset: r.u64()?,
                total_len: r.u64()?,
                checksum: r.u32()?,
                data: r.bytes()?.to_vec(),
            })
        },
        tag::INSTALL_SNAPSHOT_RESPONSE => |r| {
            Ok(MessageBody::InstallSnapshotResponse {
                index: r.u64()?,
                next_offset: r.u64()?,
                reject: r.bool()?,
            })
        },
        _ => return None,
    };
    Some(reader)
}
