//! The environment variables the hot path reads for itself,
//! `ALLOC_TRACK_MODE` and `ALLOC_TRACK_UNWIND`, checked once from the cold
//! path so that a value the tracker ignores gets one clear line on standard
//! error instead of silence.
//!
//! The hot path reads them with `getenv` (no allocation, no lock) and, on a
//! bad value, quietly uses the mode chosen in code or the walker it would
//! choose anyway: it may do no I/O. This module reads them again, parses
//! them with the same functions, and prints the line. It runs from an
//! `.init_array` constructor on ELF platforms, so the line comes before
//! `main`, and from [`start_live_dumps`](crate::start_live_dumps) (which
//! other platforms call at the top of `main`); only the first run prints.
//!
//! An empty value counts as unset, silently, for both (as for
//! `ALLOC_TRACK_DUMP`): `ALLOC_TRACK_MODE=$MODE` with `MODE` unset is a
//! common way to say "no override".

use std::ffi::OsString;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::hot::view::config::{self, Mode};
use crate::hot::view::thread::untracked;

/// Prints one line per bad value, the first time it is called in the
/// process; later calls do nothing.
pub(crate) fn warn_about_bad_values() {
    static CHECKED: AtomicBool = AtomicBool::new(false);
    if CHECKED.swap(true, Ordering::Relaxed) {
        return;
    }
    untracked(|| {
        for line in bad_value_lines(|name| std::env::var_os(name)) {
            // Not `eprintln!`: no panic if standard error is closed.
            let _ = writeln!(std::io::stderr(), "alloc-track: {line}");
        }
    });
}

/// The warnings for the variables `var` returns.
fn bad_value_lines(var: impl Fn(&str) -> Option<OsString>) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(value) = var("ALLOC_TRACK_MODE") {
        // Only a tracker installed as the global allocator reads the
        // variable; without one it changes nothing and deserves no line.
        if config::mode_setting(&bytes(&value)).is_err() && crate::is_installed() {
            // Settled by `is_installed`'s allocation, from the code's
            // choice since the environment's does not parse.
            let mode = config::settled_mode().unwrap_or(Mode::Full);
            lines.push(format!(
                "ALLOC_TRACK_MODE={:?} is not a mode (full, count, sampled or \
                 sampled:BYTES with BYTES > 0); using {mode}, the mode set in code",
                value.to_string_lossy()
            ));
        }
    }
    if let Some(value) = var("ALLOC_TRACK_UNWIND") {
        if !unwind_setting_is_valid(&bytes(&value)) {
            lines.push(format!(
                "ALLOC_TRACK_UNWIND={:?} is not a stack walker (unwinder, cfi); \
                 choosing the walker as if it were unset",
                value.to_string_lossy()
            ));
        }
    }
    lines
}

/// The value's bytes as `getenv` gives them to the hot path.
fn bytes(value: &OsString) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        value.as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        value.to_string_lossy().into_owned().into_bytes()
    }
}

#[cfg(stack_walk)]
fn unwind_setting_is_valid(value: &[u8]) -> bool {
    crate::hot::view::capture::is_valid_unwind_setting(value)
}

/// Only the platform unwinder exists here, so the variable is never read:
/// any value is harmless.
#[cfg(not(stack_walk))]
fn unwind_setting_is_valid(_: &[u8]) -> bool {
    true
}

/// Checks the variables before `main` where the platform runs
/// constructors.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
mod constructor {
    extern "C" fn check_settings() {
        // Nothing allocated and nothing printed when neither variable is
        // set: the common case for every binary that links this crate.
        if std::env::var_os("ALLOC_TRACK_MODE").is_none()
            && std::env::var_os("ALLOC_TRACK_UNWIND").is_none()
        {
            return;
        }
        // A panic must not unwind out of a constructor.
        let _ = std::panic::catch_unwind(super::warn_about_bad_values);
    }

    // `#[used]` keeps the entry even though nothing refers to it, and
    // rustc keeps `#[used]` statics of an rlib in the final link.
    #[used]
    #[link_section = ".init_array"]
    static CHECK_SETTINGS: extern "C" fn() = check_settings;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(vars: &[(&str, &str)]) -> Vec<String> {
        bad_value_lines(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn good_empty_and_missing_values_say_nothing() {
        assert!(lines(&[]).is_empty());
        assert!(lines(&[("ALLOC_TRACK_UNWIND", "")]).is_empty());
        assert!(lines(&[("ALLOC_TRACK_UNWIND", "CFI")]).is_empty());
        assert!(lines(&[("ALLOC_TRACK_UNWIND", " unwinder ")]).is_empty());
    }

    #[test]
    #[cfg(stack_walk)]
    fn a_bad_walker_gets_one_line() {
        assert_eq!(
            lines(&[("ALLOC_TRACK_UNWIND", "fast")]),
            [
                "ALLOC_TRACK_UNWIND=\"fast\" is not a stack walker (unwinder, cfi); \
              choosing the walker as if it were unset"
            ]
        );
    }
}
