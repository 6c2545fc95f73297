//! The panic boundary and the pointer checks every exported function uses.

use super::last_error::LastError;
use super::{
    embraft_status, EMBRAFT_ERR_INVALID_ARGUMENT, EMBRAFT_ERR_NULL_ARGUMENT, EMBRAFT_ERR_PANIC,
};
use crate::node::panic_message;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs the body of an exported function; a panic becomes
/// `EMBRAFT_ERR_PANIC` instead of unwinding into C (undefined behaviour).
/// Handles whose state a panic may have interrupted stay usable: each keeps
/// only data that is consistent between statements (locks are
/// parking_lot's, which do not poison).
pub(crate) fn catch_panics(body: impl FnOnce() -> embraft_status) -> embraft_status {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(EMBRAFT_ERR_PANIC)
}

/// Like [`catch_panics`] for a body working on a handle: the panic's text
/// is also recorded as the handle's last error, for the bug report.
pub(crate) fn catch_panics_into(
    errors: &LastError,
    body: impl FnOnce() -> embraft_status,
) -> embraft_status {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        errors.fail(
            EMBRAFT_ERR_PANIC,
            format!("internal error: {}", panic_message(&*payload)),
        )
    })
}

/// Borrows `ptr` or returns `EMBRAFT_ERR_NULL_ARGUMENT` from the caller.
macro_rules! borrow_or_return {
    ($ptr:expr) => {
        // SAFETY: the caller passes NULL or a live handle it owns (the
        // contract of every function taking a handle).
        match unsafe { $ptr.as_ref() } {
            Some(reference) => reference,
            None => return $crate::ffi::EMBRAFT_ERR_NULL_ARGUMENT,
        }
    };
}

/// Borrows `ptr` mutably or returns `EMBRAFT_ERR_NULL_ARGUMENT`.
macro_rules! borrow_mut_or_return {
    ($ptr:expr) => {
        // SAFETY: as for `borrow_or_return`, and the caller does not use the
        // handle from another thread meanwhile (documented per function).
        match unsafe { $ptr.as_mut() } {
            Some(reference) => reference,
            None => return $crate::ffi::EMBRAFT_ERR_NULL_ARGUMENT,
        }
    };
}

/// Returns `EMBRAFT_ERR_NULL_ARGUMENT` from the caller if any output
/// pointer is NULL; checked before any work so a call fails without side
/// effects.
macro_rules! require_outputs {
    ($($ptr:expr),+) => {
        if $($ptr.is_null())||+ {
            return $crate::ffi::EMBRAFT_ERR_NULL_ARGUMENT;
        }
    };
}

pub(crate) use {borrow_mut_or_return, borrow_or_return, require_outputs};

/// Writes a result through an output pointer already checked non-NULL.
///
/// # Safety
/// `out` must be non-NULL, aligned and writable (the caller's contract).
pub(crate) unsafe fn write_output<T>(out: *mut T, value: T) {
    // SAFETY: guaranteed by the caller, see above.
    unsafe { out.write(value) }
}

/// The byte buffer `(data, len)` passed by the host, borrowed for the call.
/// A zero length needs no buffer (`data` may then be NULL).
///
/// # Safety
/// Unless NULL, `data` must point to `len` readable bytes that stay valid
/// and unmodified during the call.
pub(crate) unsafe fn borrow_bytes<'a>(
    data: *const u8,
    len: usize,
) -> Result<&'a [u8], embraft_status> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(EMBRAFT_ERR_NULL_ARGUMENT);
    }
    if len > isize::MAX as usize {
        return Err(EMBRAFT_ERR_INVALID_ARGUMENT);
    }
    // SAFETY: non-NULL, length bounded, validity is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// The array of `count` node ids at `ids`, borrowed for the call; NULL is
/// allowed for a zero count.
///
/// # Safety
/// Unless NULL, `ids` must point to `count` readable, aligned ids.
pub(crate) unsafe fn borrow_ids<'a>(
    ids: *const u64,
    count: usize,
) -> Result<&'a [u64], embraft_status> {
    if count == 0 {
        return Ok(&[]);
    }
    if ids.is_null() {
        return Err(EMBRAFT_ERR_NULL_ARGUMENT);
    }
    if count > isize::MAX as usize / std::mem::size_of::<u64>() {
        return Err(EMBRAFT_ERR_INVALID_ARGUMENT);
    }
    // SAFETY: non-NULL, size bounded, validity is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ids, count) })
}

/// A pointer to `bytes` for a view handed to C; never NULL, even for an
/// empty slice, so hosts can pass it to memcpy with a zero length.
pub(crate) fn view_ptr(bytes: &[u8]) -> *const u8 {
    static EMPTY: u8 = 0;
    if bytes.is_empty() {
        &EMPTY
    } else {
        bytes.as_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::EMBRAFT_OK;

    #[test]
    fn a_panic_becomes_a_status() {
        // The default hook would print the panic; silence it for this test.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let status = catch_panics(|| panic!("boom"));
        std::panic::set_hook(hook);
        assert_eq!(status, EMBRAFT_ERR_PANIC);
        assert_eq!(catch_panics(|| EMBRAFT_OK), EMBRAFT_OK);
    }

    #[test]
    fn byte_buffers() {
        // SAFETY: NULL with zero length and NULL with a length are the cases
        // under test; neither is dereferenced.
        unsafe {
            assert_eq!(borrow_bytes(std::ptr::null(), 0), Ok(&[][..]));
            assert_eq!(
                borrow_bytes(std::ptr::null(), 3),
                Err(EMBRAFT_ERR_NULL_ARGUMENT)
            );
        }
        assert!(!view_ptr(&[]).is_null());
    }
}
