//! Versioned binary encoding of every message and log record.
//!
//! Every decoder is bounds-checked: any byte string, however malformed,
//! yields either a value or a [`DecodeError`], never a panic, and no decoder
//! allocates more than the input could possibly describe.

mod error;
mod frame;
mod message;
mod primitives;
mod records;

pub use error::DecodeError;
pub use frame::{decode_group_frame, encode_group_frame};
pub use message::{decode_message, encode_message, encoded_message_len};
pub use records::{
    decode_conf_state, decode_entry, decode_hard_state, decode_snapshot_meta, encode_conf_state,
    encode_entry, encode_hard_state, encode_snapshot_meta,
};

/// The version byte that starts every encoded message and record.
pub const FORMAT_VERSION: u8 = 1;
