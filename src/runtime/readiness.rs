//! A file descriptor that is readable while a ready batch waits to be
//! polled, so a host event loop (epoll, poll, select, libuv, asyncio) can
//! wait for the node alongside its sockets.
//!
//! Linux uses an eventfd; other Unix systems a non-blocking pipe. Both are
//! level-triggered from the host's point of view: the fd stays readable
//! until `poll_ready` takes the batch, which drains it.
//!
//! The fd is kept up to date only once the host has asked for it: a host
//! that waits in `poll_ready` (or is told by its own calls, as an inline
//! node's host is) would otherwise pay a write and a read system call per
//! batch for nothing.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) struct Readiness {
    /// The end the host waits on.
    read_fd: RawFd,
    /// The end the node writes to; the same fd as `read_fd` for an eventfd.
    write_fd: RawFd,
    /// Set by [`Readiness::arm`]; read and set only under the node's outbox
    /// lock, like every signal and clear, which orders them.
    armed: AtomicBool,
}

impl Readiness {
    #[cfg(target_os = "linux")]
    pub(crate) fn new() -> io::Result<Readiness> {
        // SAFETY: plain syscall with constant flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Readiness {
            read_fd: fd,
            write_fd: fd,
            armed: AtomicBool::new(false),
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn new() -> io::Result<Readiness> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in fds {
            // SAFETY: fcntl on descriptors we own; failures are harmless here
            // beyond a blocking pipe, which `signal` never fills anyway.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        Ok(Readiness {
            read_fd: fds[0],
            write_fd: fds[1],
            armed: AtomicBool::new(false),
        })
    }

    /// The fd, from now on kept readable exactly while `pending` says a
    /// batch (or a failure) waits. The caller holds the outbox lock and
    /// passes whether anything waits now, so the first signal is not lost.
    pub(crate) fn arm(&self, pending: bool) -> RawFd {
        if !self.armed.swap(true, Ordering::Relaxed) && pending {
            self.signal();
        }
        self.read_fd
    }

    /// Makes the fd readable, once it is armed. Called when the pending
    /// batch goes from empty to non-empty, so the pipe never fills.
    pub(crate) fn signal(&self) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to a descriptor we own. A
        // failure (EAGAIN on a saturated counter) leaves the fd readable,
        // which is all a signal needs.
        unsafe {
            libc::write(self.write_fd, (&one as *const u64).cast(), 8);
        }
    }

    /// Makes the fd unreadable again once the batch has been taken.
    pub(crate) fn clear(&self) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        let mut sink = [0u8; 64];
        loop {
            // SAFETY: reads into a live local buffer of the given size from a
            // non-blocking descriptor we own.
            let n = unsafe { libc::read(self.read_fd, sink.as_mut_ptr().cast(), sink.len()) };
            // An eventfd is drained by one read; a pipe may hold several
            // signals only if the host never polled, so loop until empty.
            if n <= 0 || self.read_fd == self.write_fd {
                break;
            }
        }
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        // SAFETY: the descriptors are ours and closed exactly once.
        unsafe {
            libc::close(self.read_fd);
            if self.write_fd != self.read_fd {
                libc::close(self.write_fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut waiter = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd, no wait.
        unsafe { libc::poll(&mut waiter, 1, 0) == 1 }
    }

    #[test]
    fn an_unarmed_fd_stays_quiet_and_arming_shows_what_already_waits() {
        let readiness = Readiness::new().unwrap();
        readiness.signal();
        assert!(
            !readable(readiness.read_fd),
            "signalled before anyone asked"
        );
        // A batch waited before the host asked: the fd shows it at once.
        let fd = readiness.arm(true);
        assert!(readable(fd));
        readiness.clear();
        assert!(!readable(fd));
        readiness.signal();
        assert!(readable(fd));
        // Arming again (a second caller) changes nothing.
        readiness.arm(false);
        assert!(readable(fd));
    }

    #[test]
    fn arming_with_nothing_waiting_leaves_the_fd_quiet() {
        let readiness = Readiness::new().unwrap();
        let fd = readiness.arm(false);
        assert!(!readable(fd));
        readiness.signal();
        assert!(readable(fd));
    }
}
