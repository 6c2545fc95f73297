//! The per-handle error message: the text of the most recent failed call on
//! a handle. Per handle, not thread-local, because Go moves goroutines
//! between OS threads and a thread-local message would be read on the wrong
//! thread.

use super::{embraft_status, EMBRAFT_ERR_NULL_ARGUMENT, EMBRAFT_OK};
use parking_lot::Mutex;
use std::ffi::c_char;
use std::fmt::Display;

#[derive(Default)]
pub(crate) struct LastError(Mutex<String>);

impl LastError {
    /// Records `message` and returns `status`, so a failing path reads
    /// `return errors.fail(CODE, why)`.
    pub(crate) fn fail(&self, status: embraft_status, message: impl Display) -> embraft_status {
        *self.0.lock() = message.to_string();
        status
    }

    /// Copies the message into the host's buffer, truncated to fit and
    /// always NUL-terminated; `message_len` (optional) receives the full
    /// length without the NUL so the host can retry with a larger buffer.
    ///
    /// # Safety
    /// `buf` must be NULL or point to `buf_len` writable bytes;
    /// `message_len` must be NULL or writable.
    pub(crate) unsafe fn copy_out(
        &self,
        buf: *mut c_char,
        buf_len: usize,
        message_len: *mut usize,
    ) -> embraft_status {
        if buf.is_null() && buf_len > 0 {
            // A failed call like any other: the message it leaves says so.
            return self.fail(
                EMBRAFT_ERR_NULL_ARGUMENT,
                format!("buf is NULL with a length of {buf_len}"),
            );
        }
        let message = self.0.lock();
        // Interior NULs (from paths or peer data) would cut the C string.
        let bytes: Vec<u8> = message
            .bytes()
            .map(|b| if b == 0 { b'?' } else { b })
            .collect();
        if buf_len > 0 {
            let copied = bytes.len().min(buf_len - 1);
            // SAFETY: `buf` holds `buf_len` writable bytes and
            // `copied + 1 <= buf_len`.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), copied);
                buf.add(copied).write(0);
            }
        }
        if !message_len.is_null() {
            // SAFETY: non-NULL and writable by the caller's contract.
            unsafe { message_len.write(bytes.len()) };
        }
        EMBRAFT_OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::EMBRAFT_ERR_BUSY;

    #[test]
    fn copies_truncated_and_terminated() {
        let errors = LastError::default();
        assert_eq!(
            errors.fail(EMBRAFT_ERR_BUSY, "queue full"),
            EMBRAFT_ERR_BUSY
        );
        let mut buf = [0x55 as c_char; 6];
        let mut len = 0usize;
        // SAFETY: a live buffer of the stated length and a live length.
        let status = unsafe { errors.copy_out(buf.as_mut_ptr(), buf.len(), &mut len) };
        assert_eq!(status, EMBRAFT_OK);
        assert_eq!(len, "queue full".len());
        let text: Vec<u8> = buf.iter().map(|&c| c as u8).collect();
        assert_eq!(&text, b"queue\0");
        // SAFETY: NULL buffer with zero length asks for the length only.
        let status = unsafe { errors.copy_out(std::ptr::null_mut(), 0, &mut len) };
        assert_eq!(status, EMBRAFT_OK);
        // SAFETY: NULL buffer with a length is the error under test.
        let status = unsafe { errors.copy_out(std::ptr::null_mut(), 4, &mut len) };
        assert_eq!(status, EMBRAFT_ERR_NULL_ARGUMENT);
    }
}
