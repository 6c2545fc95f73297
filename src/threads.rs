//! Threads whose panics become failures the host is told of, rather than
//! a host left waiting forever (or a panic crossing the C boundary).

use crate::error::NodeError;
use std::panic::{self, AssertUnwindSafe};
use std::thread::{self, JoinHandle};

/// Spawns `body` on a thread named `name`; a panic inside calls
/// `on_panic` with a message naming the thread.
pub(crate) fn spawn_catching(
    name: String,
    on_panic: impl FnOnce(String) + Send + 'static,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, NodeError> {
    let thread_name = name.clone();
    thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(body)) {
                on_panic(format!(
                    "internal error in {thread_name}: {}",
                    panic_message(&*payload)
                ));
            }
        })
        .map_err(|err| NodeError::Resource(format!("spawning {name}: {err}")))
}

/// The text of a panic payload, for error messages.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic".to_string()
    }
}
