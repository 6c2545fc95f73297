//! The panic boundary and the pointer checks every exported function uses.

use super::last_error::LastError;
use super::{
    embraft_status, EMBRAFT_ERR_INVALID_ARGUMENT, EMBRAFT_ERR_NULL_ARGUMENT, EMBRAFT_ERR_PANIC,
    EMBRAFT_OK,
};
use crate::node::panic_message;
use std::fmt::Display;
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

/// Why a call on a handle failed: the status it returns and the message
/// it records as the handle's last error. Every check of a call's
/// arguments returns one, so that no failure leaves the previous call's
/// message in place.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) status: embraft_status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: embraft_status, message: impl Display) -> Failure {
        Failure {
            status,
            message: message.to_string(),
        }
    }

    pub(crate) fn null(name: &str) -> Failure {
        Failure::new(EMBRAFT_ERR_NULL_ARGUMENT, format!("{name} is NULL"))
    }

    pub(crate) fn invalid(message: impl Display) -> Failure {
        Failure::new(EMBRAFT_ERR_INVALID_ARGUMENT, message)
    }
}

/// Runs the body of a call on a handle whose last error is `errors`: a
/// failure (or a panic) is recorded there and its status returned.
pub(crate) fn record_failures(
    errors: &LastError,
    body: impl FnOnce() -> Result<(), Failure>,
) -> embraft_status {
    catch_panics_into(errors, || match body() {
        Ok(()) => EMBRAFT_OK,
        Err(failure) => errors.fail(failure.status, failure.message),
    })
}

/// A handle that keeps the message of its last failed call: a node or a
/// runtime.
pub(crate) trait KeepsErrors {
    fn errors(&self) -> &LastError;
}

/// The shared body of every call on a handle that keeps messages: NULL
/// check of the handle, panic boundary, and every failure (an argument's
/// included) recorded as the handle's last error.
///
/// # Safety
/// `handle` is NULL or a live handle of its type.
pub(crate) unsafe fn with_handle<H: KeepsErrors>(
    handle: *const H,
    body: impl FnOnce(&H) -> Result<(), Failure>,
) -> embraft_status {
    catch_panics(|| {
        let handle = borrow_or_return!(handle);
        record_failures(handle.errors(), || body(handle))
    })
}

/// [`with_handle`] for a call with one output: checks `out` (parameter
/// `name`) before any work, runs `body` and writes what it returns.
///
/// # Safety
/// As for [`with_handle`]; `out` is NULL or writable.
pub(crate) unsafe fn with_output<H: KeepsErrors, T>(
    handle: *const H,
    out: *mut T,
    name: &str,
    body: impl FnOnce(&H) -> Result<T, Failure>,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_handle(handle, |handle| {
            require_output(out, name)?;
            let value = body(handle)?;
            // SAFETY: checked non-NULL above; writable by contract.
            write_output(out, value);
            Ok(())
        })
    }
}

/// Borrows `ptr` or returns `EMBRAFT_ERR_NULL_ARGUMENT` from the caller: for
/// the handle itself, which has no last error to record a message in.
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
/// effects. For handles that keep no message (ready batches, status
/// reports); calls on the others use [`require_output`].
macro_rules! require_outputs {
    ($($ptr:expr),+) => {
        if $($ptr.is_null())||+ {
            return $crate::ffi::EMBRAFT_ERR_NULL_ARGUMENT;
        }
    };
}

pub(crate) use {borrow_mut_or_return, borrow_or_return, require_outputs};

/// Refuses a NULL output pointer, by its parameter's name; checked before
/// any work so a call fails without side effects.
pub(crate) fn require_output<T>(out: *mut T, name: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::null(name));
    }
    Ok(())
}

/// Refuses node id 0, which no node has (it stands for "none").
pub(crate) fn require_node_id(id: u64, name: &str) -> Result<u64, Failure> {
    if id == 0 {
        return Err(Failure::invalid(format!(
            "{name}: node id 0 is reserved (ids start at 1)"
        )));
    }
    Ok(id)
}

/// Refuses a list of node ids holding 0 (see [`require_node_id`]).
pub(crate) fn require_node_ids(ids: &[u64], name: &str) -> Result<(), Failure> {
    ids.iter()
        .try_for_each(|&id| require_node_id(id, name).map(drop))
}

/// Writes a result through an output pointer already checked non-NULL.
///
/// # Safety
/// `out` must be non-NULL, aligned and writable (the caller's contract).
pub(crate) unsafe fn write_output<T>(out: *mut T, value: T) {
    // SAFETY: guaranteed by the caller, see above.
    unsafe { out.write(value) }
}

/// The byte buffer `(data, len)` passed by the host as parameter `name`,
/// borrowed for the call. A zero length needs no buffer (`data` may then
/// be NULL).
///
/// # Safety
/// Unless NULL, `data` must point to `len` readable bytes that stay valid
/// and unmodified during the call.
pub(crate) unsafe fn borrow_bytes<'a>(
    data: *const u8,
    len: usize,
    name: &str,
) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(Failure::new(
            EMBRAFT_ERR_NULL_ARGUMENT,
            format!("{name} is NULL with a length of {len}"),
        ));
    }
    if len > isize::MAX as usize {
        return Err(Failure::invalid(format!(
            "{name}: length {len} exceeds the largest object"
        )));
    }
    // SAFETY: non-NULL, length bounded, validity is the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// The array of `count` node ids at `ids` (parameter `name`), borrowed for
/// the call; NULL is allowed for a zero count. Id 0 is refused.
///
/// # Safety
/// Unless NULL, `ids` must point to `count` readable, aligned ids.
pub(crate) unsafe fn borrow_ids<'a>(
    ids: *const u64,
    count: usize,
    name: &str,
) -> Result<&'a [u64], Failure> {
    if count == 0 {
        return Ok(&[]);
    }
    if ids.is_null() {
        return Err(Failure::new(
            EMBRAFT_ERR_NULL_ARGUMENT,
            format!("{name} is NULL with a count of {count}"),
        ));
    }
    if count > isize::MAX as usize / std::mem::size_of::<u64>() {
        return Err(Failure::invalid(format!(
            "{name}: count {count} exceeds the largest object"
        )));
    }
    // SAFETY: non-NULL, size bounded, validity is the caller's contract.
    let ids = unsafe { std::slice::from_raw_parts(ids, count) };
    require_node_ids(ids, name)?;
    Ok(ids)
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
            assert_eq!(borrow_bytes(std::ptr::null(), 0, "data"), Ok(&[][..]));
            assert_eq!(
                borrow_bytes(std::ptr::null(), 3, "data"),
                Err(Failure::new(
                    EMBRAFT_ERR_NULL_ARGUMENT,
                    "data is NULL with a length of 3"
                ))
            );
        }
        assert!(!view_ptr(&[]).is_null());
    }
}
