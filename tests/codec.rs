//! Tests of the codec through its public API: fixed byte layouts (the wire
//! format is a promise to other implementations), the rejection rules,
//! round trips of random values, and a fuzz run of over a million random and
//! mutated inputs that must never panic, never allocate more than the input
//! could describe, and re-encode to the same bytes whenever they decode.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Instant;

use embraft::codec::{
    decode_conf_state, decode_entry, decode_hard_state, decode_message, decode_snapshot_meta,
    encode_conf_state, encode_entry, encode_hard_state, encode_message, encode_snapshot_meta,
    encoded_message_len, DecodeError, FORMAT_VERSION,
};
use embraft::core::{ConfState, Entry, EntryKind, HardState, Message, MessageBody, SnapshotMeta};

// ---------------------------------------------------------------------------
// Allocation accounting: counts the bytes the current thread asks for while
// a measurement is running, so the fuzz run can check that no decoder
// allocates more than its input could describe.

struct CountingAllocator;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static BYTES_REQUESTED: Cell<usize> = const { Cell::new(0) };
}

fn note_request(size: usize) {
    // try_with: the allocator may run while thread-locals are torn down.
    let _ = MEASURING.try_with(|measuring| {
        if measuring.get() {
            let _ = BYTES_REQUESTED.try_with(|n| n.set(n.get() + size));
        }
    });
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_request(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_request(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns its result with the bytes it asked the allocator for.
fn measure_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    BYTES_REQUESTED.with(|n| n.set(0));
    MEASURING.with(|m| m.set(true));
    let value = f();
    MEASURING.with(|m| m.set(false));
    (value, BYTES_REQUESTED.with(|n| n.get()))
}

// ---------------------------------------------------------------------------
// A small seeded generator (SplitMix64), so every run sees the same inputs
// and a failure can be replayed.

struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn below_usize(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn bool(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// A u64 that hits the edges (0, 1, u64::MAX, ...) often.
    fn edgy_u64(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => u64::MAX - 1,
            4 => self.below(1000),
            5 => 1 << self.below(64),
            _ => self.next_u64(),
        }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

// ---------------------------------------------------------------------------
// Random values of every type. `max_payload` bounds entry and snapshot data
// so the fuzz run can keep its seeds small.

fn random_kind(rng: &mut SplitMix64) -> EntryKind {
    match rng.below(3) {
        0 => EntryKind::Normal,
        1 => EntryKind::Noop,
        _ => EntryKind::ConfChange,
    }
}

fn random_payload(rng: &mut SplitMix64, max_payload: usize) -> Vec<u8> {
    // Empty payloads are common in practice (no-ops), so favour them.
    let len = if rng.one_in(3) {
        0
    } else {
        rng.below_usize(max_payload + 1)
    };
    rng.bytes(len)
}

fn random_entry(rng: &mut SplitMix64, max_payload: usize) -> Entry {
    Entry {
        index: rng.edgy_u64(),
        term: rng.edgy_u64(),
        kind: random_kind(rng),
        data: random_payload(rng, max_payload).into(),
    }
}

fn random_ids(rng: &mut SplitMix64) -> Vec<u64> {
    let len = rng.below_usize(6);
    (0..len).map(|_| rng.edgy_u64()).collect()
}

fn random_conf_state(rng: &mut SplitMix64) -> ConfState {
    ConfState {
        voters: random_ids(rng),
        learners: random_ids(rng),
        voters_outgoing: random_ids(rng),
        learners_next: random_ids(rng),
        auto_leave: rng.bool(),
    }
}

fn random_snapshot_meta(rng: &mut SplitMix64) -> SnapshotMeta {
    SnapshotMeta {
        index: rng.edgy_u64(),
        term: rng.edgy_u64(),
        conf_state: random_conf_state(rng),
    }
}

fn random_hard_state(rng: &mut SplitMix64) -> HardState {
    HardState {
        term: rng.edgy_u64(),
        vote: rng.edgy_u64(),
        commit: rng.edgy_u64(),
    }
}

const VARIANT_COUNT: u64 = 15;

/// A random body of the variant numbered `variant` (0..VARIANT_COUNT).
fn random_body(rng: &mut SplitMix64, variant: u64, max_payload: usize) -> MessageBody {
    match variant {
        0 => MessageBody::PreVote {
            last_index: rng.edgy_u64(),
            last_term: rng.edgy_u64(),
        },
        1 => MessageBody::PreVoteResponse { reject: rng.bool() },
        2 => MessageBody::Vote {
            last_index: rng.edgy_u64(),
            last_term: rng.edgy_u64(),
            transfer: rng.bool(),
        },
        3 => MessageBody::VoteResponse { reject: rng.bool() },
        4 => {
            let count = rng.below_usize(5);
            MessageBody::Append {
                prev_index: rng.edgy_u64(),
                prev_term: rng.edgy_u64(),
                entries: (0..count).map(|_| random_entry(rng, max_payload)).collect(),
                commit: rng.edgy_u64(),
            }
        }
        5 => MessageBody::AppendResponse {
            reject: rng.bool(),
            index: rng.edgy_u64(),
            hint_index: rng.edgy_u64(),
            hint_term: rng.edgy_u64(),
        },
        6 => MessageBody::Heartbeat {
            commit: rng.edgy_u64(),
            context: rng.edgy_u64(),
        },
        7 => MessageBody::HeartbeatResponse {
            context: rng.edgy_u64(),
        },
        8 => MessageBody::TimeoutNow,
        9 => MessageBody::ReadIndex {
            context: rng.edgy_u64(),
        },
        10 => MessageBody::ReadIndexResponse {
            index: rng.edgy_u64(),
            context: rng.edgy_u64(),
            reject: rng.bool(),
        },
        11 => MessageBody::InstallSnapshot {
            meta: random_snapshot_meta(rng),
            offset: rng.edgy_u64(),
            total_len: rng.edgy_u64(),
            checksum: rng.next_u64() as u32,
            data: random_payload(rng, max_payload),
        },
        12 => MessageBody::InstallSnapshotResponse {
            index: rng.edgy_u64(),
            next_offset: rng.edgy_u64(),
            reject: rng.bool(),
        },
        13 => MessageBody::Quiesce {
            commit: rng.edgy_u64(),
        },
        _ => MessageBody::WakeUp,
    }
}

fn random_message(rng: &mut SplitMix64, variant: u64, max_payload: usize) -> Message {
    Message {
        from: rng.edgy_u64(),
        to: rng.edgy_u64(),
        term: rng.edgy_u64(),
        body: random_body(rng, variant, max_payload),
    }
}

fn encoded_message(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(msg, &mut out);
    out
}

// ---------------------------------------------------------------------------
// Fixed layouts. These pin the format: if one fails, the change breaks every
// peer and disk written by an earlier build, and docs/WIRE.md is wrong.

#[test]
fn format_version_is_one() {
    assert_eq!(FORMAT_VERSION, 1);
}

#[test]
fn tags_are_fixed() {
    let mut rng = SplitMix64(1);
    let names_and_tags = [
        ("PreVote", 1),
        ("PreVoteResponse", 2),
        ("Vote", 3),
        ("VoteResponse", 4),
        ("Append", 5),
        ("AppendResponse", 6),
        ("Heartbeat", 7),
        ("HeartbeatResponse", 8),
        ("TimeoutNow", 9),
        ("ReadIndex", 10),
        ("ReadIndexResponse", 11),
        ("InstallSnapshot", 12),
        ("InstallSnapshotResponse", 13),
        ("Quiesce", 14),
        ("WakeUp", 15),
    ];
    for (variant, (name, tag)) in names_and_tags.iter().enumerate() {
        let msg = random_message(&mut rng, variant as u64, 8);
        assert_eq!(msg.body.name(), *name);
        let bytes = encoded_message(&msg);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(bytes[1], *tag, "tag of {name}");
    }
}

/// The worked example of docs/WIRE.md.
#[test]
fn append_layout_is_fixed() {
    let msg = Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Append {
            prev_index: 4,
            prev_term: 3,
            entries: vec![Entry {
                index: 5,
                term: 3,
                kind: EntryKind::Normal,
                data: b"hi".to_vec().into(),
            }],
            commit: 4,
        },
    };
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        0x01,                                           // version
        0x05,                                           // tag: Append
        0x01, 0, 0, 0, 0, 0, 0, 0,                      // from = 1
        0x02, 0, 0, 0, 0, 0, 0, 0,                      // to = 2
        0x03, 0, 0, 0, 0, 0, 0, 0,                      // term = 3
        0x04, 0, 0, 0, 0, 0, 0, 0,                      // prev_index = 4
        0x03, 0, 0, 0, 0, 0, 0, 0,                      // prev_term = 3
        0x01, 0, 0, 0,                                  // entry count = 1
        0x05, 0, 0, 0, 0, 0, 0, 0,                      //   index = 5
        0x03, 0, 0, 0, 0, 0, 0, 0,                      //   term = 3
        0x00,                                           //   kind: Normal
        0x02, 0, 0, 0, b'h', b'i',                      //   data = "hi"
        0x04, 0, 0, 0, 0, 0, 0, 0,                      // commit = 4
    ];
    assert_eq!(expected.len(), 77, "the length docs/WIRE.md states");
    assert_eq!(encoded_message(&msg), expected);
    assert_eq!(encoded_message_len(&msg), expected.len());
    assert_eq!(decode_message(&expected), Ok(msg));
}

#[test]
fn install_snapshot_layout_is_fixed() {
    let msg = Message {
        from: 0x0102,
        to: u64::MAX,
        term: 7,
        body: MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index: 9,
                term: 7,
                conf_state: ConfState {
                    voters: vec![1, 2],
                    learners: vec![],
                    voters_outgoing: vec![3],
                    learners_next: vec![],
                    auto_leave: true,
                },
            },
            offset: 0,
            total_len: 3,
            checksum: 0xAABB_CCDD,
            data: vec![7, 8, 9],
        },
    };
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        0x01, 0x0C,                                     // version, tag 12
        0x02, 0x01, 0, 0, 0, 0, 0, 0,                   // from = 0x0102
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, // to = u64::MAX
        0x07, 0, 0, 0, 0, 0, 0, 0,                      // term = 7
        0x09, 0, 0, 0, 0, 0, 0, 0,                      // meta.index = 9
        0x07, 0, 0, 0, 0, 0, 0, 0,                      // meta.term = 7
        0x02, 0, 0, 0,                                  // voters: 2 ids
        0x01, 0, 0, 0, 0, 0, 0, 0,
        0x02, 0, 0, 0, 0, 0, 0, 0,
        0x00, 0, 0, 0,                                  // learners: none
        0x01, 0, 0, 0,                                  // voters_outgoing: 1 id
        0x03, 0, 0, 0, 0, 0, 0, 0,
        0x00, 0, 0, 0,                                  // learners_next: none
        0x01,                                           // auto_leave = true
        0x00, 0, 0, 0, 0, 0, 0, 0,                      // offset = 0
        0x03, 0, 0, 0, 0, 0, 0, 0,                      // total_len = 3
        0xDD, 0xCC, 0xBB, 0xAA,                         // checksum
        0x03, 0, 0, 0, 7, 8, 9,                         // data
    ];
    assert_eq!(encoded_message(&msg), expected);
    assert_eq!(decode_message(&expected), Ok(msg));
}

#[test]
fn timeout_now_is_header_only() {
    let msg = Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::TimeoutNow,
    };
    let bytes = encoded_message(&msg);
    assert_eq!(bytes.len(), 26);
    assert_eq!(bytes[1], 9);
}

#[test]
fn hard_state_layout_is_fixed() {
    let mut out = Vec::new();
    encode_hard_state(
        &HardState {
            term: 1,
            vote: 2,
            commit: 3,
        },
        &mut out,
    );
    #[rustfmt::skip]
    let expected = [
        1,
        1, 0, 0, 0, 0, 0, 0, 0,
        2, 0, 0, 0, 0, 0, 0, 0,
        3, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(out, expected);
}

#[test]
fn encoders_append_to_existing_bytes() {
    let msg = random_message(&mut SplitMix64(5), 4, 16);
    let mut out = vec![0xEE, 0xEE];
    encode_message(&msg, &mut out);
    assert_eq!(&out[..2], &[0xEE, 0xEE]);
    assert_eq!(decode_message(&out[2..]), Ok(msg));
}

// ---------------------------------------------------------------------------
// Rejection rules, each with the offset it reports.

fn heartbeat() -> Message {
    Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Heartbeat {
            commit: 4,
            context: 5,
        },
    }
}

fn assert_rejected(bytes: &[u8], offset: usize, reason: &str) {
    let err: DecodeError = decode_message(bytes).expect_err("must be rejected");
    assert_eq!((err.offset, err.reason), (offset, reason), "{bytes:02x?}");
}

#[test]
fn rejects_empty_input() {
    assert_rejected(&[], 0, "truncated");
}

#[test]
fn rejects_other_versions() {
    for version in [0u8, 2, 0xFF] {
        let mut bytes = encoded_message(&heartbeat());
        bytes[0] = version;
        assert_rejected(&bytes, 0, "unsupported format version");
    }
}

#[test]
fn rejects_unknown_tags_before_reading_further() {
    for tag in [0u8, 16, 0x7F, 0xFF] {
        let mut bytes = encoded_message(&heartbeat());
        bytes[1] = tag;
        assert_rejected(&bytes, 1, "unknown message tag");
        // Even when nothing follows the tag.
        assert_rejected(&bytes[..2], 1, "unknown message tag");
    }
}

#[test]
fn rejects_every_truncation_and_any_trailing_byte() {
    let bytes = encoded_message(&heartbeat());
    for len in 0..bytes.len() {
        let err = decode_message(&bytes[..len]).expect_err("prefix must be rejected");
        assert_eq!(err.reason, "truncated");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_rejected(&longer, bytes.len(), "trailing bytes");
}

#[test]
fn rejects_booleans_other_than_zero_and_one() {
    let msg = Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Vote {
            last_index: 4,
            last_term: 5,
            transfer: true,
        },
    };
    let mut bytes = encoded_message(&msg);
    let at = bytes.len() - 1;
    for value in [2u8, 0x80, 0xFF] {
        bytes[at] = value;
        assert_rejected(&bytes, at, "boolean is neither 0 nor 1");
    }
}

/// An Append with one entry of payload `data`; returns the message bytes
/// and the offsets of the entry count, the entry kind and the data length.
fn append_with_one_entry(data: &[u8]) -> (Vec<u8>, usize, usize, usize) {
    let msg = Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![Entry {
                index: 1,
                term: 3,
                kind: EntryKind::Noop,
                data: data.to_vec().into(),
            }],
            commit: 0,
        },
    };
    let count_at = 26 + 16;
    let kind_at = count_at + 4 + 16;
    (encoded_message(&msg), count_at, kind_at, kind_at + 1)
}

#[test]
fn rejects_unknown_entry_kinds() {
    let (mut bytes, _, kind_at, _) = append_with_one_entry(b"x");
    for kind in [3u8, 0xFF] {
        bytes[kind_at] = kind;
        assert_rejected(&bytes, kind_at, "unknown entry kind");
    }
}

#[test]
fn rejects_counts_and_lengths_past_the_input_without_allocating_them() {
    let (bytes, count_at, _, data_len_at) = append_with_one_entry(b"abc");
    // Two entries cannot fit in what follows the count: one entry with
    // three bytes of data, then the commit.
    for count in [u32::MAX, 0x8000_0000, 1_000_000, 2] {
        let mut patched = bytes.clone();
        patched[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
        let (result, allocated) = measure_allocation(|| decode_message(&patched));
        let err = result.expect_err("count past the input");
        assert_eq!(
            (err.offset, err.reason),
            (count_at, "item count larger than the input")
        );
        assert!(allocated <= 4 * patched.len(), "allocated {allocated}");
    }
    // The data and the commit leave 3 + 8 bytes, so 12 is one too many.
    for len in [u32::MAX, 0x8000_0000, 1_000_000, 12] {
        let mut patched = bytes.clone();
        patched[data_len_at..data_len_at + 4].copy_from_slice(&len.to_le_bytes());
        let (result, allocated) = measure_allocation(|| decode_message(&patched));
        let err = result.expect_err("length past the input");
        assert_eq!(
            (err.offset, err.reason),
            (data_len_at, "byte string longer than the input")
        );
        assert!(allocated <= 4 * patched.len(), "allocated {allocated}");
    }
}

#[test]
fn rejects_id_counts_past_the_input() {
    let mut bytes = Vec::new();
    encode_conf_state(&ConfState::default(), &mut bytes);
    bytes[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = decode_conf_state(&bytes).expect_err("count past the input");
    assert_eq!(
        (err.offset, err.reason),
        (1, "item count larger than the input")
    );
}

// ---------------------------------------------------------------------------
// Round trips.

#[test]
fn random_messages_round_trip() {
    let mut rng = SplitMix64(0x5EED_0001);
    let mut per_variant = BTreeMap::new();
    let rounds = 26_000;
    for round in 0..rounds {
        let variant = round % VARIANT_COUNT;
        // Mostly small payloads, now and then a large one.
        let max_payload = if rng.one_in(50) { 70_000 } else { 300 };
        let msg = random_message(&mut rng, variant, max_payload);
        let bytes = encoded_message(&msg);
        assert_eq!(encoded_message_len(&msg), bytes.len(), "{msg:?}");
        assert_eq!(decode_message(&bytes).as_ref(), Ok(&msg));
        *per_variant.entry(msg.body.name()).or_insert(0u32) += 1;
    }
    assert_eq!(per_variant.len(), VARIANT_COUNT as usize);
    println!("round-tripped {rounds} messages: {per_variant:?}");
}

#[test]
fn random_records_round_trip() {
    let mut rng = SplitMix64(0x5EED_0002);
    let rounds = 5_000;
    for _ in 0..rounds {
        let mut out = Vec::new();
        let entry = random_entry(&mut rng, 1_000);
        encode_entry(&entry, &mut out);
        assert_eq!(decode_entry(&out), Ok(entry));

        out.clear();
        let hard_state = random_hard_state(&mut rng);
        encode_hard_state(&hard_state, &mut out);
        assert_eq!(decode_hard_state(&out), Ok(hard_state));

        out.clear();
        let conf_state = random_conf_state(&mut rng);
        encode_conf_state(&conf_state, &mut out);
        assert_eq!(decode_conf_state(&out), Ok(conf_state));

        out.clear();
        let meta = random_snapshot_meta(&mut rng);
        encode_snapshot_meta(&meta, &mut out);
        assert_eq!(decode_snapshot_meta(&out), Ok(meta));
    }
    println!("round-tripped {rounds} each of entry, hard state, conf state, snapshot meta");
}

// ---------------------------------------------------------------------------
// Fuzzing.

/// What one decoder made of an input.
struct Outcome {
    /// The re-encoding of the decoded value, or the decode error.
    reencoded: Result<Vec<u8>, DecodeError>,
    /// Bytes the decoder (not the re-encoder) asked the allocator for.
    allocated: usize,
}

/// Decodes `bytes` as `T`, measuring the decoder's allocations, and on
/// success re-encodes the value.
fn decode_and_reencode<T>(
    bytes: &[u8],
    decode: fn(&[u8]) -> Result<T, DecodeError>,
    encode: fn(&T, &mut Vec<u8>),
) -> Outcome {
    let (decoded, allocated) = measure_allocation(|| decode(bytes));
    let reencoded = decoded.map(|value| {
        let mut out = Vec::new();
        encode(&value, &mut out);
        out
    });
    Outcome {
        reencoded,
        allocated,
    }
}

/// One decoder of the codec, paired with its encoder.
type Codec = (&'static str, fn(&[u8]) -> Outcome);

const CODECS: [Codec; 5] = [
    ("message", |b| {
        decode_and_reencode(b, decode_message, encode_message)
    }),
    ("entry", |b| {
        decode_and_reencode(b, decode_entry, encode_entry)
    }),
    ("hard state", |b| {
        decode_and_reencode(b, decode_hard_state, encode_hard_state)
    }),
    ("conf state", |b| {
        decode_and_reencode(b, decode_conf_state, encode_conf_state)
    }),
    ("snapshot meta", |b| {
        decode_and_reencode(b, decode_snapshot_meta, encode_snapshot_meta)
    }),
];
const MESSAGE_CODEC: usize = 0;
const ENTRY_CODEC: usize = 1;

/// Tallies of a fuzz run.
#[derive(Default)]
struct FuzzStats {
    inputs: u64,
    decoder_runs: u64,
    decoded: u64,
    rejections: BTreeMap<&'static str, u64>,
}

impl FuzzStats {
    /// Feeds `bytes` to every decoder. Whatever decodes must re-encode to the
    /// very same bytes (the encoding is canonical), and no decoder may
    /// allocate more than a small multiple of the input's size. The decoder
    /// numbered `must_reject`, if any, must fail.
    fn feed(&mut self, bytes: &[u8], must_reject: Option<usize>) {
        self.inputs += 1;
        for (number, (name, run)) in CODECS.iter().enumerate() {
            let outcome = run(bytes);
            self.decoder_runs += 1;
            // The widest decoded item is an Entry (48 bytes in memory) from
            // at least 21 encoded bytes, so decoding stays under 3x.
            assert!(
                outcome.allocated <= 3 * bytes.len(),
                "{name} decoder allocated {} bytes for {} input bytes: {bytes:02x?}",
                outcome.allocated,
                bytes.len()
            );
            match outcome.reencoded {
                Ok(reencoded) => {
                    self.decoded += 1;
                    assert_eq!(reencoded, bytes, "{name} encoding is not canonical");
                    assert_ne!(must_reject, Some(number), "{name} accepted {bytes:02x?}");
                }
                Err(err) => *self.rejections.entry(err.reason).or_insert(0) += 1,
            }
        }
    }
}

#[test]
fn fuzz_random_and_mutated_inputs() {
    let started = Instant::now();
    let mut rng = SplitMix64(0x5EED_0003);
    let mut stats = FuzzStats::default();

    // Purely random byte strings. Half start with the version byte and a
    // plausible tag so that they get past the first checks.
    for _ in 0..300_000 {
        let len = rng.below_usize(160);
        let mut bytes = rng.bytes(len);
        if len >= 2 && rng.bool() {
            bytes[0] = FORMAT_VERSION;
            bytes[1] = rng.below(15) as u8;
        }
        stats.feed(&bytes, None);
    }
    let random_inputs = stats.inputs;

    // Mutations of valid encodings.
    let mut seeds = 0u64;
    while stats.inputs < 1_200_000 {
        let (codec, seed) = random_seed_encoding(&mut rng, seeds);
        seeds += 1;
        mutate_and_feed(&mut rng, codec, &seed, &mut stats);
    }

    println!(
        "fuzz: {} inputs ({} random, {} mutations of {} valid encodings); \
         {} decoder runs, {} decoded (all canonical); {:?}",
        stats.inputs,
        random_inputs,
        stats.inputs - random_inputs,
        seeds,
        stats.decoder_runs,
        stats.decoded,
        started.elapsed()
    );
    println!("fuzz rejections by reason: {:?}", stats.rejections);
    assert!(stats.inputs >= 1_000_000);
    // Every rejection rule must have been exercised.
    for reason in [
        "truncated",
        "trailing bytes",
        "unsupported format version",
        "unknown message tag",
        "boolean is neither 0 nor 1",
        "unknown entry kind",
        "byte string longer than the input",
        "item count larger than the input",
    ] {
        assert!(stats.rejections.contains_key(reason), "never hit: {reason}");
    }
}

/// A valid encoding to mutate, with the number of its codec in [`CODECS`]:
/// mostly messages, the rest records.
fn random_seed_encoding(rng: &mut SplitMix64, number: u64) -> (usize, Vec<u8>) {
    let mut out = Vec::new();
    let codec = match number % 8 {
        0 => {
            encode_entry(&random_entry(rng, 24), &mut out);
            ENTRY_CODEC
        }
        1 => {
            let record = 2 + rng.below_usize(3);
            match record {
                2 => encode_hard_state(&random_hard_state(rng), &mut out),
                3 => encode_conf_state(&random_conf_state(rng), &mut out),
                _ => encode_snapshot_meta(&random_snapshot_meta(rng), &mut out),
            }
            record
        }
        _ => {
            let variant = rng.below(VARIANT_COUNT);
            encode_message(&random_message(rng, variant, 24), &mut out);
            MESSAGE_CODEC
        }
    };
    (codec, out)
}

fn mutate_and_feed(rng: &mut SplitMix64, codec: usize, seed: &[u8], stats: &mut FuzzStats) {
    let len = seed.len();

    // Every truncation, and garbage appended: an encoding is exactly as long
    // as its value, so its own decoder must reject all of these.
    for cut in 0..len {
        stats.feed(&seed[..cut], Some(codec));
    }
    for _ in 0..4 {
        let mut longer = seed.to_vec();
        let extra = 1 + rng.below_usize(16);
        longer.extend(rng.bytes(extra));
        stats.feed(&longer, Some(codec));
    }

    // Bit flips and byte overwrites, one to three at a time.
    for _ in 0..16 {
        let mut bytes = seed.to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below_usize(len);
            bytes[at] ^= 1 << rng.below(8);
        }
        stats.feed(&bytes, None);
    }
    for _ in 0..16 {
        let mut bytes = seed.to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below_usize(len);
            bytes[at] = match rng.below(4) {
                0 => 0,
                1 => 0xFF,
                2 => 0x80,
                _ => rng.next_u64() as u8,
            };
        }
        stats.feed(&bytes, None);
    }

    // A huge or just-too-large u32 at every offset: wherever a length or
    // count field sits, it gets one of these values.
    for at in 0..len.saturating_sub(3) {
        let left_after = (len - at - 4) as u32;
        let value = match rng.below(5) {
            0 => u32::MAX,
            1 => 0x8000_0000,
            2 => left_after + 1,
            3 => left_after / 8 + 1,
            _ => left_after / 21 + 1,
        };
        let mut bytes = seed.to_vec();
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        stats.feed(&bytes, None);
    }
}
