//! The node's one door to the codec: messages leave as bytes and arrive as
//! bytes, in the codec's versioned encoding (docs/WIRE.md).

use crate::codec::{decode_message, encode_message, DecodeError};
use crate::core::Message;

/// Encodes `msg` into a fresh buffer, ready to hand to the host transport.
pub(crate) fn encode(msg: &Message) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_message(msg, &mut bytes);
    bytes
}

/// Decodes bytes received from a peer; malformed input is an error, never a
/// panic (the codec guarantees it for any byte string).
pub(crate) fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    decode_message(bytes)
}
