//! The group frame: many groups' messages to one peer runtime in one
//! payload (docs/WIRE.md, "Group frames"), so a transport sends one frame
//! per peer per round however many groups talk to it.

use super::error::DecodeError;
use super::primitives::{put_bytes, put_len, put_u64, Reader};

/// Smallest encoded message item: a group id and an empty length prefix.
const MIN_ITEM_BYTES: usize = 8 + 4;

/// Appends a group frame holding `messages` (group id, encoded message) to
/// `out`.
pub fn encode_group_frame<'a>(
    messages: impl ExactSizeIterator<Item = (u64, &'a [u8])>,
    out: &mut Vec<u8>,
) {
    put_len(out, messages.len());
    for (group, bytes) in messages {
        put_u64(out, group);
        put_bytes(out, bytes);
    }
}

/// The messages of a group frame, in order, borrowed from `frame`. The
/// whole frame is checked before anything is returned: a malformed frame
/// yields no message.
pub fn decode_group_frame(frame: &[u8]) -> Result<Vec<(u64, &[u8])>, DecodeError> {
    let mut reader = Reader::new(frame);
    let count = reader.u32()? as usize;
    // Checked against what the frame could hold before allocating.
    if count > reader.remaining() / MIN_ITEM_BYTES {
        return Err(DecodeError::at(0, "more messages than the frame can hold"));
    }
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        let group = reader.u64()?;
        let bytes = reader.bytes()?;
        messages.push((group, bytes));
    }
    if reader.remaining() > 0 {
        return Err(reader.error("bytes after the last message"));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_order() {
        let messages: Vec<(u64, &[u8])> = vec![
            (7, b"first"),
            (u64::MAX, b""),
            (7, b"second"),
            (0, &[0xff; 300]),
        ];
        let mut frame = Vec::new();
        encode_group_frame(messages.iter().copied(), &mut frame);
        assert_eq!(decode_group_frame(&frame).unwrap(), messages);
        let mut empty = Vec::new();
        encode_group_frame(std::iter::empty(), &mut empty);
        assert_eq!(empty, [0, 0, 0, 0]);
        assert!(decode_group_frame(&empty).unwrap().is_empty());
    }

    #[test]
    fn the_worked_example_of_docs_wire_md() {
        let mut frame = Vec::new();
        encode_group_frame(
            [(7u64, &[1u8, 2, 3][..]), (9, &[4, 5][..])].into_iter(),
            &mut frame,
        );
        let expected = [
            2, 0, 0, 0, //
            7, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 2, 3, //
            9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 4, 5,
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn every_malformed_frame_is_refused_whole() {
        let mut frame = Vec::new();
        encode_group_frame(
            [(1u64, &b"abc"[..]), (2, &b"de"[..])].into_iter(),
            &mut frame,
        );
        // Every cut short of the end, and a byte too many.
        for len in 0..frame.len() {
            assert!(decode_group_frame(&frame[..len]).is_err(), "cut at {len}");
        }
        let mut long = frame.clone();
        long.push(0);
        let err = decode_group_frame(&long).unwrap_err();
        assert_eq!(err.reason, "bytes after the last message");
        // A count no frame of this size can hold allocates nothing.
        let huge = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let err = decode_group_frame(&huge).unwrap_err();
        assert_eq!(err.reason, "more messages than the frame can hold");
        // Arbitrary bytes never panic.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (state >> (i % 8 * 8)) as u8).collect();
            let _ = decode_group_frame(&bytes);
        }
    }
}
