//! The one error every decoder returns.

use std::fmt;

/// Why a byte string could not be decoded, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset in the input of the field that could not be decoded
    /// (for trailing bytes: of the first byte past the value).
    pub offset: usize,
    /// What was wrong there.
    pub reason: &'static str,
}

impl DecodeError {
    pub(crate) fn at(offset: usize, reason: &'static str) -> DecodeError {
        DecodeError { offset, reason }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed input at byte {}: {}",
            self.offset, self.reason
        )
    }
}

impl std::error::Error for DecodeError {}
