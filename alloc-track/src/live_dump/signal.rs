//! Dumps on a signal: the handler writes one byte to a pipe, the
//! background thread waits on the other end.
//!
//! A forked child inherits the handler and both ends of the pipe, but not
//! the thread: a signal sent to the child would wake the parent's thread
//! and make the *parent* dump. So a fork handler closes the child's copies
//! and the child's handler then does nothing (see "In a forked child" in
//! the parent module).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The pipe's write end, for the handler; -1 until installed, and in a
/// forked child.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// The pipe's read end, for the fork handler to close in the child (the
/// [`Wake`] that owns it belongs to a thread the child does not have).
static READ_FD: AtomicI32 = AtomicI32::new(-1);

/// The pipe's read end, owned by the background thread.
pub(super) struct Wake {
    read: OwnedFd,
}

impl Wake {
    /// Waits up to `timeout` (`None`: forever) for a signal; true if
    /// one came.
    pub(super) fn wait(&self, timeout: Option<Duration>) -> bool {
        let millis = match timeout {
            // Round up so that the tick has passed when poll returns.
            Some(t) => i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX),
            None => -1,
        };
        let mut poll = libc::pollfd {
            fd: self.read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `poll` points to one valid pollfd for the call.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready <= 0 {
            return false; // timeout, or EINTR: the caller loops
        }
        // Drain every pending byte: signals that arrived together are
        // answered with one dump.
        let mut buffer = [0u8; 64];
        loop {
            // SAFETY: `buffer` is valid for `buffer.len()` bytes.
            let n = unsafe {
                libc::read(
                    self.read.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            if n < buffer.len() as isize {
                break;
            }
        }
        true
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    // `write` may set errno (EAGAIN when the pipe is full, which only
    // means a dump is already pending); the interrupted code must not
    // see it changed.
    let saved = errno::get();
    let byte = 1u8;
    // SAFETY: `write` is async-signal-safe; `byte` is valid for one
    // byte; `fd` is the pipe's write end, open for the process's life.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    errno::set(saved);
}

/// Creates the pipe and installs the handler for `signal`.
pub(super) fn install(signal: libc::c_int) -> io::Result<Wake> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` has room for the two descriptors `pipe` writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `pipe` just opened both; each is owned once from here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&read, &write] {
        set_flags(fd.as_raw_fd())?;
    }
    // SAFETY: `forget_pipe_in_child` is an `extern "C" fn()` that never
    // unwinds; no prepare or parent handler is needed.
    let registered = unsafe { libc::pthread_atfork(None, None, Some(forget_pipe_in_child)) };
    if registered != 0 {
        // Without it a child would share the parent's pipe: refuse rather
        // than let a signal to a child make the parent dump.
        return Err(io::Error::from_raw_os_error(registered));
    }
    READ_FD.store(read.as_raw_fd(), Ordering::Relaxed);
    // The write end stays open for the life of the process: the
    // handler may run at any moment.
    WAKE_FD.store(
        std::os::fd::IntoRawFd::into_raw_fd(write),
        Ordering::Relaxed,
    );
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask"
    // value; the fields set below complete it.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SA_RESTART: the program's blocking calls resume after the
    // handler instead of failing with EINTR.
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action.sa_mask` is a valid sigset to empty; the handler
    // is async-signal-safe (one atomic load, one `write`).
    let installed = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut())
    };
    if installed != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Wake { read })
}

/// Runs in a forked child before any of its code: the pipe is the
/// parent's, and no thread of the child reads it.
extern "C" fn forget_pipe_in_child() {
    for fd in [
        WAKE_FD.swap(-1, Ordering::Relaxed),
        READ_FD.swap(-1, Ordering::Relaxed),
    ] {
        if fd >= 0 {
            // SAFETY: the child's copies of the pipe's two ends, which
            // nothing else in the child uses: the handler reads `WAKE_FD`,
            // now -1, and the `Wake` is on the stack of a thread the
            // child does not have. `close` is async-signal-safe.
            unsafe { libc::close(fd) };
        }
    }
}

/// Non-blocking (the handler must never block on a full pipe, and the
/// reader drains until empty) and closed on `exec`.
fn set_flags(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: `fd` is an open descriptor; F_GETFL/F_SETFL/F_SETFD take
    // and return plain integers.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0
            || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
            || libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// errno, saved and restored around the handler's `write`.
mod errno {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn location() -> *mut libc::c_int {
        #[cfg(target_os = "linux")]
        // SAFETY: returns the calling thread's errno slot; no preconditions.
        return unsafe { libc::__errno_location() };
        #[cfg(target_os = "android")]
        // SAFETY: as above.
        return unsafe { libc::__errno() };
    }

    #[cfg(any(target_os = "freebsd", target_vendor = "apple"))]
    fn location() -> *mut libc::c_int {
        // SAFETY: returns the calling thread's errno slot; no preconditions.
        unsafe { libc::__error() }
    }

    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_vendor = "apple"
    ))]
    pub(super) fn get() -> libc::c_int {
        // SAFETY: the slot is valid for the thread's life.
        unsafe { *location() }
    }

    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_vendor = "apple"
    ))]
    pub(super) fn set(value: libc::c_int) {
        // SAFETY: as in `get`.
        unsafe { *location() = value }
    }

    // Elsewhere errno is left as `write` leaves it.
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_vendor = "apple"
    )))]
    pub(super) fn get() -> libc::c_int {
        0
    }

    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_vendor = "apple"
    )))]
    pub(super) fn set(_: libc::c_int) {}
}
