//! Live dumps: heap dumps written while the process runs, configured by
//! environment variables so that a deployed binary needs no rebuild.
//!
//! | Variable | Effect |
//! |---|---|
//! | `ALLOC_TRACK_DUMP=PATH` | write a dump to `PATH` when the process exits (normal return from `main` or `std::process::exit`) |
//! | `ALLOC_TRACK_INTERVAL=SECONDS` | also every `SECONDS` (decimals allowed), to numbered files beside it: `heap.json` gives `heap.1.json`, `heap.2.json`, ... |
//! | `ALLOC_TRACK_SIGNAL=USR1` | also whenever the process receives `SIGUSR1` (or `USR2`), to the same numbered files (Unix) |
//! | `ALLOC_TRACK_KEEP=N` | keep only the newest `N` numbered dumps, deleting older ones |
//!
//! `{pid}` in `PATH` is replaced by the process id, so that several
//! processes started with the same environment write different files, and
//! so that a forked child has an exit dump of its own (see below).
//!
//! # How it starts without a call
//!
//! On ELF platforms a constructor in `.init_array` runs before `main`. It
//! only reads the variables, registers the exit hook (`atexit`) and the
//! signal handler, and, when an interval or a signal is configured, starts
//! one background thread. Nothing else happens there, and nothing at all
//! when no variable is set. Other platforms call [`start_live_dumps`] once
//! at the top of `main`.
//!
//! The thread is started in the constructor because there is no later
//! moment at which this crate runs without the user calling it: the
//! allocator's hot path must never spawn threads or read the environment.
//! Spawning it there is sound on glibc and musl: the C library and its
//! thread support are initialised before any `.init_array` entry of the
//! executable runs, and Rust's standard library needs no runtime set-up
//! to start a thread (the `fork` handlers in `hot::fork` are registered
//! the same way). The thread only sleeps until its first tick.
//!
//! # Where the work happens
//!
//! Never in the allocator and never in the signal handler. The handler
//! only writes one byte to a pipe (`write` is async-signal-safe); the
//! background thread waits on that pipe with `poll`, whose timeout is the
//! next interval tick, so a signal is answered at once and an idle
//! process wakes only for its ticks. The exit dump is written by the
//! thread that calls `exit`. Dumps are serialised by one lock, so an exit
//! during a periodic dump waits for it rather than racing it.
//!
//! Every dump goes through [`Snapshot::save`](crate::Snapshot::save):
//! written to a temporary file and renamed, so a crash mid-write never
//! leaves a partial file under the real name. A dump that cannot be
//! written costs one line on standard error, never a panic.
//!
//! # In a forked child
//!
//! `fork` copies only the thread that calls it: the child has no
//! background thread, whatever the parent had. What the child does:
//!
//! - [`dump`] works as in any process, even if another thread of the
//!   parent was writing a dump at the fork (the lock that serialises
//!   dumps is a fork-safe one that the child takes over, see
//!   `fork_safe/mutex.rs`).
//! - No periodic dumps and no dumps on signal: they belong to the parent's
//!   numbered series, which a child must not overwrite or extend under
//!   the same names. A dump signal sent to the child is ignored (it
//!   neither kills the child nor wakes the parent's thread, whose pipe the
//!   child would otherwise share).
//! - At exit, a dump only if `ALLOC_TRACK_DUMP` contains `{pid}`: then it
//!   goes to the path with the child's own process id. Without `{pid}` the
//!   path is the parent's, so the child writes none (it would overwrite
//!   the parent's). A child that leaves with `_exit`, or through `exec`,
//!   runs no exit hook at all.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::dump::DumpError;
use crate::fork_safe::{ForkSafeMutex, ForkSafeOnce};
use crate::hot::view::thread::untracked;

/// Writes a dump of the live heap to `path` now, atomically (a temporary
/// file renamed into place). For code that decides itself when to dump,
/// e.g. an HTTP admin endpoint or a worker's every thousandth task.
///
/// ```no_run
/// # use std::alloc::System;
/// # #[global_allocator]
/// # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
/// # fn main() -> Result<(), alloc_track::dump::DumpError> {
/// alloc_track::dump("heap.json")?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// If the file cannot be written, or if the [`Tracker`](crate::Tracker)
/// is not the program's global allocator (the dump would be empty). Never
/// panics, so that a failed dump cannot take a service down. How `path`
/// is treated (symbolic links followed, anything but a regular file
/// refused, concurrent saves) is described at
/// [`Dump::save`](crate::dump::Dump::save).
///
/// Safe to call in a child made by `fork`, even while another thread of
/// the parent was writing a dump at the fork: see the module's
/// "In a forked child".
pub fn dump(path: impl AsRef<Path>) -> Result<(), DumpError> {
    let path = path.as_ref();
    if !crate::is_installed() {
        return Err(DumpError::Io {
            path: Some(path.to_path_buf()),
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                "alloc_track::Tracker is not this program's global allocator",
            ),
        });
    }
    // One dump at a time: the periodic thread, a signal and the exit hook
    // may all want one at once, and two full walks of the heap in parallel
    // only double the pause.
    let _writing = WRITING.lock();
    crate::Snapshot::take().save(path)
}

/// The `n`th numbered file beside `path`: `n` goes before the extension,
/// so `dumps/heap.json` gives `dumps/heap.3.json` and `heap` gives
/// `heap.3`. The names the periodic and signal dumps use, and the order
/// `alloc-track trend` expects.
///
/// ```
/// use std::path::Path;
/// assert_eq!(
///     alloc_track::numbered_path(Path::new("dumps/heap.json"), 3),
///     Path::new("dumps/heap.3.json")
/// );
/// ```
pub fn numbered_path(path: &Path, n: u64) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default();
    let mut name = OsString::from(stem);
    name.push(format!(".{n}"));
    if let Some(extension) = path.extension() {
        name.push(".");
        name.push(extension);
    }
    path.with_file_name(name)
}

/// Reads the `ALLOC_TRACK_*` variables and starts live dumps, once per
/// process; later calls do nothing. On Linux, Android and FreeBSD this has
/// already happened before `main`; elsewhere call it at the top of `main`.
pub fn start_live_dumps() {
    crate::settings::warn_about_bad_values();
    START.get_or_init(|| {
        untracked(|| {
            let (config, warnings) = Config::from_vars(|name| std::env::var_os(name));
            for warning in warnings {
                warn(&warning);
            }
            if let Some(config) = config {
                start(config);
            }
        })
    });
}

/// Set once [`start_live_dumps`] has run.
static START: ForkSafeOnce<()> = ForkSafeOnce::new();

/// What the environment asked for.
#[derive(Clone, Debug, PartialEq)]
struct Config {
    /// The exit dump; numbered dumps go beside it. `{pid}` already
    /// replaced by the process id of the process that read the variables.
    path: PathBuf,
    /// `ALLOC_TRACK_DUMP` as given, when it contains `{pid}`: a forked
    /// child's exit dump goes there, with the child's id.
    per_process: Option<String>,
    interval: Option<Duration>,
    /// The signal number, Unix only.
    signal: Option<i32>,
    /// How many numbered dumps to keep; `None` keeps all.
    keep: Option<u64>,
}

impl Config {
    /// Parses the variables `var` returns. Bad values are left out with a
    /// warning each, so a typo never stops the service or silently
    /// disables the dumps that were spelled correctly.
    fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> (Option<Config>, Vec<String>) {
        let mut warnings = Vec::new();
        let path = var("ALLOC_TRACK_DUMP").filter(|p| !p.is_empty());
        let interval = var("ALLOC_TRACK_INTERVAL").and_then(|raw| {
            let text = raw.to_string_lossy();
            match text.trim().parse::<f64>() {
                Ok(seconds) if (0.001..1e9).contains(&seconds) => {
                    Some(Duration::from_secs_f64(seconds))
                }
                _ => {
                    warnings.push(format!(
                        "ALLOC_TRACK_INTERVAL={text:?} is not a number of seconds (at least 0.001); no periodic dumps"
                    ));
                    None
                }
            }
        });
        let signal = var("ALLOC_TRACK_SIGNAL").and_then(|raw| {
            let text = raw.to_string_lossy();
            let signal = signal_number(&text);
            if signal.is_none() {
                warnings.push(format!(
                    "ALLOC_TRACK_SIGNAL={text:?} is not USR1 or USR2 (or signals are not supported here); no dumps on signal"
                ));
            }
            signal
        });
        let keep = var("ALLOC_TRACK_KEEP").and_then(|raw| {
            let text = raw.to_string_lossy();
            match text.trim().parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    warnings.push(format!(
                        "ALLOC_TRACK_KEEP={text:?} is not a positive whole number; keeping every dump"
                    ));
                    None
                }
            }
        });
        let Some(path) = path else {
            if interval.is_some() || signal.is_some() {
                warnings.push(
                    "ALLOC_TRACK_INTERVAL and ALLOC_TRACK_SIGNAL need ALLOC_TRACK_DUMP=PATH to name the dumps; none will be written".to_string(),
                );
            }
            return (None, warnings);
        };
        let template = path.to_string_lossy().into_owned();
        let config = Config {
            path: with_pid(&template, std::process::id()),
            per_process: template.contains("{pid}").then_some(template),
            interval,
            signal,
            keep,
        };
        (Some(config), warnings)
    }
}

/// `template` with every `{pid}` replaced by `pid`.
fn with_pid(template: &str, pid: u32) -> PathBuf {
    PathBuf::from(template.replace("{pid}", &pid.to_string()))
}

impl Config {
    /// Where this process writes its exit dump: the configured path in
    /// the process that read the variables; in a forked child, its own
    /// path if the template has `{pid}`, else none (see the module's
    /// "In a forked child"). Only where there is an exit hook.
    #[cfg(unix)]
    fn exit_path(&self, owner: u32, me: u32) -> Option<PathBuf> {
        if me == owner {
            return Some(self.path.clone());
        }
        self.per_process
            .as_deref()
            .map(|template| with_pid(template, me))
    }
}

#[cfg(unix)]
fn signal_number(name: &str) -> Option<i32> {
    let name = name.trim().to_ascii_uppercase();
    match name.strip_prefix("SIG").unwrap_or(&name) {
        "USR1" => Some(libc::SIGUSR1),
        "USR2" => Some(libc::SIGUSR2),
        _ => None,
    }
}

#[cfg(not(unix))]
fn signal_number(_name: &str) -> Option<i32> {
    None
}

/// Serialises dump writing (see [`dump`]). Fork-safe: a child forked
/// while a parent thread writes a dump must still be able to dump.
static WRITING: ForkSafeMutex<()> = ForkSafeMutex::new((), || ());

/// Set when the exit dump begins: the periodic thread writes no more.
static EXITING: AtomicBool = AtomicBool::new(false);

/// The configuration, once started: the exit hook reads it.
static CONFIG: ForkSafeOnce<Config> = ForkSafeOnce::new();

/// The process that read the configuration. A child made by `fork`
/// inherits the exit hook but not the background thread; it must not
/// overwrite its parent's exit dump, so the hook checks this.
static OWNER_PID: AtomicU32 = AtomicU32::new(0);

/// The number of the last numbered dump written.
static NUMBERED: AtomicU64 = AtomicU64::new(0);

fn start(config: Config) {
    let config = CONFIG.get_or_init(|| config);
    OWNER_PID.store(std::process::id(), Ordering::Relaxed);
    register_exit_hook();
    let wake = match config.signal {
        Some(signal) => match signal::install(signal) {
            Ok(fd) => Some(fd),
            Err(error) => {
                warn(&format!(
                    "cannot watch for signal {signal}: {error}; no dumps on signal"
                ));
                None
            }
        },
        None => None,
    };
    if config.interval.is_none() && wake.is_none() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("alloc-track-dump".into())
        .spawn(move || untracked(|| background(config, wake)));
    if let Err(error) = spawned {
        warn(&format!(
            "cannot start the dump thread: {error}; only the exit dump will be written"
        ));
    }
}

/// The background thread: a numbered dump at every tick and every signal.
fn background(config: &Config, wake: Option<signal::Wake>) {
    let mut next_tick = config.interval.map(|interval| Instant::now() + interval);
    loop {
        let timeout = next_tick.map(|tick| tick.saturating_duration_since(Instant::now()));
        let signalled = match &wake {
            Some(wake) => wake.wait(timeout),
            None => {
                // No signal: only ticks, so `timeout` is set.
                std::thread::sleep(timeout.unwrap_or(Duration::from_secs(3600)));
                false
            }
        };
        let ticked = match (next_tick, config.interval) {
            (Some(tick), Some(interval)) if Instant::now() >= tick => {
                // Skip the ticks missed while a slow dump was written
                // rather than writing them back to back.
                let mut next = tick + interval;
                let now = Instant::now();
                while next <= now {
                    next += interval;
                }
                next_tick = Some(next);
                true
            }
            _ => false,
        };
        if signalled || ticked {
            write_numbered(config);
        }
    }
}

fn write_numbered(config: &Config) {
    if EXITING.load(Ordering::Acquire) {
        return;
    }
    let n = NUMBERED.fetch_add(1, Ordering::Relaxed) + 1;
    let path = numbered_path(&config.path, n);
    if let Err(error) = dump(&path) {
        warn(&format!("periodic dump failed: {error}"));
        return;
    }
    if let Some(keep) = config.keep {
        if n > keep {
            // Only the one that just fell out of the window: older ones
            // were removed at earlier dumps.
            let _ = std::fs::remove_file(numbered_path(&config.path, n - keep));
        }
    }
}

/// One line on standard error. Never panics (unlike `eprintln!`) even if
/// standard error is closed, and never waits for the standard library's
/// stderr lock, which a forked child may have inherited held.
fn warn(message: &str) {
    let line = format!("alloc-track: {message}\n");
    #[cfg(unix)]
    {
        let mut rest = line.as_bytes();
        while !rest.is_empty() {
            // SAFETY: `rest` is valid for `rest.len()` bytes; fd 2 is only
            // written to, and a closed one makes `write` fail, nothing more.
            let written = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
            match usize::try_from(written) {
                Ok(n) if n > 0 => rest = &rest[n.min(rest.len())..],
                _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                _ => return,
            }
        }
    }
    #[cfg(not(unix))]
    {
        use std::io::Write as _;
        let _ = io::stderr().write_all(line.as_bytes());
    }
}

#[cfg(unix)]
fn register_exit_hook() {
    extern "C" fn at_exit() {
        // A panic must not unwind into the C library's `exit`.
        let _ = std::panic::catch_unwind(|| untracked(write_exit_dump));
    }
    // SAFETY: `at_exit` is a plain `extern "C" fn()` that lives as long as
    // the program; `atexit` only stores the pointer.
    if unsafe { libc::atexit(at_exit) } != 0 {
        warn("cannot register the exit hook; no dump will be written at exit");
    }
}

#[cfg(not(unix))]
fn register_exit_hook() {
    warn("dumps at exit are not supported on this platform; call alloc_track::dump yourself");
}

#[cfg(unix)]
fn write_exit_dump() {
    let Some(config) = CONFIG.get() else {
        return;
    };
    let owner = OWNER_PID.load(Ordering::Relaxed);
    let Some(path) = config.exit_path(owner, std::process::id()) else {
        return; // a forked child, and the path is its parent's
    };
    // No numbered dump after this one: the exit would cut it short and
    // leave its temporary file behind.
    EXITING.store(true, Ordering::Release);
    if let Err(error) = dump(&path) {
        warn(&format!("dump at exit failed: {error}"));
    }
}

/// Starts live dumps before `main` where the platform runs constructors.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
mod constructor {
    extern "C" fn start_from_environment() {
        super::untracked(start_if_configured);
    }

    fn start_if_configured() {
        // Nothing to do, and nothing allocated, when no variable is set:
        // the common case for every binary that links this crate.
        const NAMES: [&str; 3] = [
            "ALLOC_TRACK_DUMP",
            "ALLOC_TRACK_INTERVAL",
            "ALLOC_TRACK_SIGNAL",
        ];
        if NAMES.iter().all(|name| std::env::var_os(name).is_none()) {
            return;
        }
        // A panic must not unwind out of a constructor.
        let _ = std::panic::catch_unwind(super::start_live_dumps);
    }

    // `#[used]` keeps the entry even though nothing refers to it, and
    // rustc keeps `#[used]` statics of an rlib in the final link.
    #[used]
    #[link_section = ".init_array"]
    static START_FROM_ENVIRONMENT: extern "C" fn() = start_from_environment;
}

/// Dumps on a signal (Unix).
#[cfg(unix)]
mod signal;

#[cfg(not(unix))]
mod signal {
    use std::io;
    use std::time::Duration;

    pub(super) struct Wake;

    impl Wake {
        pub(super) fn wait(&self, _: Option<Duration>) -> bool {
            false
        }
    }

    pub(super) fn install(_: i32) -> io::Result<Wake> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "signals are Unix only",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> (Option<Config>, Vec<String>) {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Config::from_vars(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn numbered_files_put_the_number_before_the_extension() {
        assert_eq!(
            numbered_path(Path::new("d/heap.json"), 1),
            Path::new("d/heap.1.json")
        );
        assert_eq!(numbered_path(Path::new("heap"), 12), Path::new("heap.12"));
        assert_eq!(
            numbered_path(Path::new("a.b.json"), 2),
            Path::new("a.b.2.json")
        );
    }

    #[test]
    fn nothing_set_means_nothing_to_do() {
        assert_eq!(parse(&[]), (None, vec![]));
    }

    #[test]
    fn every_variable_is_read() {
        let (config, warnings) = parse(&[
            ("ALLOC_TRACK_DUMP", "out/{pid}.json"),
            ("ALLOC_TRACK_INTERVAL", "0.25"),
            ("ALLOC_TRACK_SIGNAL", "sigusr2"),
            ("ALLOC_TRACK_KEEP", "10"),
        ]);
        assert!(warnings.is_empty(), "{warnings:?}");
        let config = config.expect("configured");
        assert_eq!(
            config.path,
            PathBuf::from(format!("out/{}.json", std::process::id()))
        );
        assert_eq!(config.interval, Some(Duration::from_millis(250)));
        #[cfg(unix)]
        assert_eq!(config.signal, Some(libc::SIGUSR2));
        assert_eq!(config.keep, Some(10));
    }

    #[test]
    fn bad_values_warn_and_leave_the_rest_working() {
        let (config, warnings) = parse(&[
            ("ALLOC_TRACK_DUMP", "heap.json"),
            ("ALLOC_TRACK_INTERVAL", "soon"),
            ("ALLOC_TRACK_SIGNAL", "HUP"),
            ("ALLOC_TRACK_KEEP", "0"),
        ]);
        let config = config.expect("the exit dump still works");
        assert_eq!(config.interval, None);
        assert_eq!(config.signal, None);
        assert_eq!(config.keep, None);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("ALLOC_TRACK_INTERVAL=\"soon\""));

        for bad in ["-1", "0", "NaN", "inf", ""] {
            let (_, warnings) = parse(&[
                ("ALLOC_TRACK_DUMP", "heap.json"),
                ("ALLOC_TRACK_INTERVAL", bad),
            ]);
            assert_eq!(warnings.len(), 1, "{bad:?}");
        }
    }

    #[test]
    #[cfg(unix)]
    fn a_forked_child_has_an_exit_dump_only_with_pid_in_the_path() {
        let (shared, _) = parse(&[("ALLOC_TRACK_DUMP", "heap.json")]);
        let shared = shared.expect("configured");
        let owner = std::process::id();
        assert_eq!(
            shared.exit_path(owner, owner),
            Some(PathBuf::from("heap.json"))
        );
        assert_eq!(shared.exit_path(owner, owner + 1), None);

        let (own, _) = parse(&[("ALLOC_TRACK_DUMP", "out/heap.{pid}.json")]);
        let own = own.expect("configured");
        assert_eq!(
            own.exit_path(owner, owner),
            Some(PathBuf::from(format!("out/heap.{owner}.json")))
        );
        assert_eq!(
            own.exit_path(owner, 4242),
            Some(PathBuf::from("out/heap.4242.json"))
        );
    }

    #[test]
    fn an_interval_without_a_path_is_a_warning() {
        let (config, warnings) = parse(&[("ALLOC_TRACK_INTERVAL", "5")]);
        assert_eq!(config, None);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("need ALLOC_TRACK_DUMP"));
    }
}
