//! Little-endian writers and a bounds-checked reader shared by every
//! encoder and decoder of the codec.

use super::error::DecodeError;

pub(crate) fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A u32 length or count prefix.
///
/// A value past `u32::MAX` cannot be represented; silently truncating it
/// would produce bytes that decode to something else, so it is refused
/// loudly instead. Layers above the codec bound payload sizes well below
/// this (see docs/WIRE.md).
pub(crate) fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("length or count exceeds the u32 wire limit");
    put_u32(out, len);
}

/// A length-prefixed (u32) byte string.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Encoded size of a byte string written by [`put_bytes`].
pub(crate) fn bytes_len(bytes: &[u8]) -> usize {
    4 + bytes.len()
}

/// A count-prefixed (u32) list of node ids.
pub(crate) fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    put_len(out, ids.len());
    for id in ids {
        put_u64(out, *id);
    }
}

/// Encoded size of an id list written by [`put_ids`].
pub(crate) fn ids_len(ids: &[u64]) -> usize {
    4 + 8 * ids.len()
}

/// Reads values off the front of a byte slice, failing cleanly at its end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// An error at the current position.
    pub(crate) fn error(&self, reason: &'static str) -> DecodeError {
        DecodeError::at(self.pos, reason)
    }

    /// The current position; callers keep it to report an error at the start
    /// of a field they have already consumed.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.error("truncated"));
        }
        let slice = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// A boolean byte. Only 0 and 1 are accepted, so that every value has
    /// exactly one encoding.
    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        let at = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::at(at, "boolean is neither 0 nor 1")),
        }
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length-prefixed byte string; the length is checked against what is
    /// left before anything is allocated.
    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let at = self.pos;
        let len = self.u32()? as usize;
        if len > self.remaining() {
            return Err(DecodeError::at(at, "byte string longer than the input"));
        }
        Ok(self.take(len)?.to_vec())
    }

    /// A count-prefixed list whose items are at least `min_item_len` bytes;
    /// returns the count once it is known to fit in what is left.
    pub(crate) fn count(&mut self, min_item_len: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_len.max(1)) > self.remaining() {
            return Err(DecodeError::at(at, "item count larger than the input"));
        }
        Ok(n)
    }

    pub(crate) fn ids(&mut self) -> Result<Vec<u64>, DecodeError> {
        let n = self.count(8)?;
        // The count is bounded by the input, so reserving it up front is safe
        // and avoids regrowing the vector.
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.u64()?);
        }
        Ok(ids)
    }

    /// Fails unless the whole input was consumed.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(self.error("trailing bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_string_that_exactly_fits_is_read() {
        let mut buf = Vec::new();
        put_bytes(&mut buf, b"abc");
        let mut r = Reader::new(&buf);
        assert_eq!(r.bytes().unwrap(), b"abc");
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn errors_point_at_the_start_of_the_field() {
        let mut r = Reader::new(&[7, 2]);
        r.u8().unwrap();
        assert_eq!(
            r.bool(),
            Err(DecodeError::at(1, "boolean is neither 0 nor 1"))
        );

        // A length prefix of 5 with 4 bytes after it.
        let buf = [0, 5, 0, 0, 0, 1, 2, 3, 4];
        let mut r = Reader::new(&buf);
        r.u8().unwrap();
        assert_eq!(
            r.bytes(),
            Err(DecodeError::at(1, "byte string longer than the input"))
        );

        let mut r = Reader::new(&[1, 0, 0]);
        assert_eq!(r.u32(), Err(DecodeError::at(0, "truncated")));
    }

    #[test]
    fn count_cannot_overflow_or_skip_the_size_check() {
        let buf = u32::MAX.to_le_bytes();
        // usize::MAX items of usize::MAX bytes must saturate, not wrap.
        assert!(Reader::new(&buf).count(usize::MAX).is_err());
        // Zero-sized items are counted as one byte each.
        assert!(Reader::new(&buf).count(0).is_err());
        let mut one_item = 1u32.to_le_bytes().to_vec();
        one_item.push(0);
        assert_eq!(Reader::new(&one_item).count(0), Ok(1));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    #[should_panic(expected = "u32 wire limit")]
    fn lengths_past_u32_are_refused_not_truncated() {
        put_len(&mut Vec::new(), u32::MAX as usize + 1);
    }
}
