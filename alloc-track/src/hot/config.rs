//! The tracker's settings, fixed when the `Tracker` static is built and
//! passed by reference into every hot-path call, and the mode in force,
//! settled once per process at the first allocation.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::site_id::MAX_SITES;

/// How much the tracker records. Chosen in code with
/// [`Tracker::sampled`](crate::Tracker::sampled) and
/// [`Tracker::counting`](crate::Tracker::counting) (the default is
/// [`Mode::Full`]), and overridable without a rebuild by the environment
/// variable `ALLOC_TRACK_MODE` (`full`, `count`, `sampled` or
/// `sampled:BYTES`, e.g. `sampled:1048576` or `sampled:1m`).
///
/// `ALLOC_TRACK_MODE` is read without regard to case or to blanks around
/// the value (`FULL` is `full`). Set but empty, it counts as unset (as
/// `ALLOC_TRACK_DUMP` does), so that `ALLOC_TRACK_MODE=$MODE` with `MODE`
/// unset changes nothing. Any other value that is not a mode (`bogus`,
/// `sampled:0`) is ignored: the mode chosen in code is used, and the
/// process prints one line on standard error saying so, such as
/// `alloc-track: ALLOC_TRACK_MODE="bogus" is not a mode (full, count,
/// sampled or sampled:BYTES with BYTES > 0); using sampled:524288, the mode
/// set in code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every allocation with its stack: exact figures for every site. The
    /// mode for finding a leak or explaining a peak, in development, tests
    /// and staging.
    Full,
    /// Poisson sampling by bytes, as jemalloc, tcmalloc and Go do: on
    /// average one allocation per `mean_bytes` allocated is recorded with
    /// its stack, and each sample stands for `1 / (1 - exp(-size /
    /// mean_bytes))` allocations, so per-site figures are unbiased
    /// estimates. Live and allocated totals stay exact; the peak is exact
    /// to within 64 KiB per thread. The mode to leave on in production.
    Sampled {
        /// The mean number of bytes between samples.
        mean_bytes: u64,
    },
    /// Exact totals and [`measure`](fn@crate::measure), the peak to within
    /// 64 KiB per thread, no stacks: the cheapest mode, for watching a
    /// figure rather than explaining it.
    Count,
}

/// The default sampling interval: jemalloc's and Go's 512 KiB.
pub const DEFAULT_SAMPLE_BYTES: u64 = 512 * 1024;

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Full => f.write_str("full"),
            Mode::Sampled { mean_bytes } => write!(f, "sampled:{mean_bytes}"),
            Mode::Count => f.write_str("count"),
        }
    }
}

impl Mode {
    /// Parses the values `ALLOC_TRACK_MODE` takes: `full`, `count`,
    /// `sampled`, `sampled:BYTES` with an optional `k`/`m`/`g` suffix
    /// (binary units), in any case, blanks around them ignored. `BYTES`
    /// must be at least 1. Never allocates: it runs inside the allocator.
    pub fn parse(text: &[u8]) -> Option<Mode> {
        let text = text.trim_ascii();
        let is = |name: &[u8]| text.eq_ignore_ascii_case(name);
        if is(b"full") {
            Some(Mode::Full)
        } else if is(b"count") || is(b"counting") {
            Some(Mode::Count)
        } else if is(b"sampled") {
            Some(Mode::Sampled {
                mean_bytes: DEFAULT_SAMPLE_BYTES,
            })
        } else {
            const PREFIX: &[u8] = b"sampled:";
            let (prefix, bytes) = text.split_at_checked(PREFIX.len())?;
            if !prefix.eq_ignore_ascii_case(PREFIX) {
                return None;
            }
            let mean_bytes = parse_bytes(bytes)?;
            (mean_bytes > 0 && mean_bytes < 1 << 62).then_some(Mode::Sampled { mean_bytes })
        }
    }

    /// Packs the mode into one non-zero word (0 means "not settled yet").
    const fn encode(self) -> u64 {
        match self {
            Mode::Full => 1,
            Mode::Count => 2,
            Mode::Sampled { mean_bytes } => (mean_bytes << 2) | 3,
        }
    }

    const fn decode(word: u64) -> Mode {
        match word & 3 {
            2 => Mode::Count,
            3 => Mode::Sampled {
                mean_bytes: word >> 2,
            },
            _ => Mode::Full,
        }
    }
}

/// A byte count with an optional `k`/`m`/`g` suffix (binary units), in
/// any case; `None` if it is not one or overflows.
fn parse_bytes(text: &[u8]) -> Option<u64> {
    let (digits, shift) = match text.last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 10),
        b'm' | b'M' => (&text[..text.len() - 1], 20),
        b'g' | b'G' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: u64 = 0;
    for &digit in digits {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    value.checked_mul(1 << shift)
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// The mode chosen in code; the environment may override it.
    pub(crate) mode: Mode,
    /// The most distinct stacks recorded before new ones go to "other".
    pub(crate) max_sites: u32,
    /// How far, in thousandths, live bytes must climb above the last peak
    /// breakdown before a new one is taken. Each breakdown copies every
    /// site's live figures, so a margin keeps the number of breakdowns
    /// logarithmic in the peak instead of one per new high.
    pub(crate) peak_margin_permille: u32,
    /// `std::any::type_name` of the inner allocator, so that the cold path
    /// can tell whether it is `System` (whose figures `mallinfo2` gives on
    /// glibc) without a bound on `Tracker`'s parameter.
    pub(crate) inner_type_name: fn() -> &'static str,
}

/// The smallest climb that triggers a new peak breakdown, so that a small
/// heap does not refresh on every allocation.
pub(crate) const MIN_PEAK_MARGIN_BYTES: u64 = 64 * 1024;

/// The mode in force, encoded; 0 until the first allocation settles it.
/// Settled once and never changed, so that every block is freed under the
/// mode it was allocated in.
static MODE: AtomicU64 = AtomicU64::new(0);

impl Config {
    pub(crate) const DEFAULT: Config = Config {
        mode: Mode::Full,
        max_sites: MAX_SITES,
        peak_margin_permille: 20,
        inner_type_name: unknown_inner,
    };

    /// The default settings for a tracker wrapping `A`.
    pub(crate) const fn wrapping<A>() -> Config {
        Config {
            inner_type_name: std::any::type_name::<A>,
            ..Config::DEFAULT
        }
    }

    /// Remembers the installed tracker's inner allocator for the cold path
    /// (`allocator_stats`): one store at the first allocation, nothing
    /// called.
    #[cold]
    pub(crate) fn publish_inner_allocator(&self) {
        INNER_TYPE_NAME.store(self.inner_type_name as *mut (), Ordering::Relaxed);
    }

    /// Live bytes above which a new breakdown is due, given the live bytes
    /// at the last one.
    #[inline]
    pub(crate) fn next_breakdown_at(&self, last: u64) -> u64 {
        let margin = (last / 1000).saturating_mul(u64::from(self.peak_margin_permille));
        last.saturating_add(margin.max(MIN_PEAK_MARGIN_BYTES))
    }

    /// The mode in force: one relaxed load once settled.
    #[inline]
    pub(crate) fn mode(&self) -> Mode {
        match MODE.load(Ordering::Relaxed) {
            0 => self.settle_mode(),
            word => Mode::decode(word),
        }
    }

    /// Settles the mode at the first allocation: the environment's
    /// `ALLOC_TRACK_MODE` if it parses, else the mode chosen in code (a bad
    /// value is reported once on stderr by the cold path, `settings.rs`:
    /// no I/O here). Reads the environment with `getenv`, which neither
    /// allocates nor locks anything of ours. Threads racing here agree: the
    /// first store wins.
    #[cold]
    fn settle_mode(&self) -> Mode {
        let chosen = environment_mode().unwrap_or(self.mode);
        match MODE.compare_exchange(0, chosen.encode(), Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => chosen,
            Err(settled) => Mode::decode(settled),
        }
    }
}

/// What an `ALLOC_TRACK_MODE` value asks for: `Ok(None)` when it is empty
/// or blank (as if unset), `Err` when it is not a mode. Shared by the hot
/// path, which ignores a bad value, and the cold path, which reports it.
pub(crate) fn mode_setting(value: &[u8]) -> Result<Option<Mode>, NotAMode> {
    if value.trim_ascii().is_empty() {
        return Ok(None);
    }
    Mode::parse(value).map(Some).ok_or(NotAMode)
}

/// An `ALLOC_TRACK_MODE` value that names no mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NotAMode;

fn unknown_inner() -> &'static str {
    ""
}

/// The installed tracker's `inner_type_name`, null until its first
/// allocation.
static INNER_TYPE_NAME: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

/// The type name of the installed tracker's inner allocator, once it has
/// allocated. Asked only by `allocator_stats`, where it reads an
/// allocator's own figures: jemalloc's (the `jemalloc` feature) or glibc's.
#[cfg(any(feature = "jemalloc", all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn inner_allocator_type_name() -> Option<&'static str> {
    let pointer = INNER_TYPE_NAME.load(Ordering::Relaxed);
    if pointer.is_null() {
        return None;
    }
    // SAFETY: the only non-null value ever stored is a `fn() -> &'static
    // str` cast to a pointer (`publish_inner_allocator`), so this casts it
    // back to the same function type.
    let type_name: fn() -> &'static str = unsafe { std::mem::transmute(pointer) };
    Some(type_name())
}

/// The mode in force, if the first allocation has settled it.
pub(crate) fn settled_mode() -> Option<Mode> {
    match MODE.load(Ordering::Relaxed) {
        0 => None,
        word => Some(Mode::decode(word)),
    }
}

fn environment_mode() -> Option<Mode> {
    // SAFETY: the name is a NUL-terminated C string; `getenv` returns null
    // or a pointer to a NUL-terminated value that stays valid until the
    // environment is modified, and nothing here modifies it.
    unsafe {
        let value = libc::getenv(c"ALLOC_TRACK_MODE".as_ptr());
        if value.is_null() {
            return None;
        }
        mode_setting(std::ffi::CStr::from_ptr(value).to_bytes()).unwrap_or(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_unset_and_a_bad_value_is_an_error() {
        assert_eq!(mode_setting(b""), Ok(None));
        assert_eq!(mode_setting(b"  "), Ok(None));
        assert_eq!(mode_setting(b"count"), Ok(Some(Mode::Count)));
        assert_eq!(mode_setting(b"bogus"), Err(NotAMode));
        assert_eq!(mode_setting(b"sampled:0"), Err(NotAMode));
    }

    #[test]
    fn modes_parse_and_round_trip() {
        assert_eq!(Mode::parse(b"full"), Some(Mode::Full));
        assert_eq!(Mode::parse(b"count"), Some(Mode::Count));
        assert_eq!(
            Mode::parse(b"sampled"),
            Some(Mode::Sampled {
                mean_bytes: 512 * 1024
            })
        );
        assert_eq!(
            Mode::parse(b"sampled:4096"),
            Some(Mode::Sampled { mean_bytes: 4096 })
        );
        assert_eq!(
            Mode::parse(b"sampled:1m"),
            Some(Mode::Sampled {
                mean_bytes: 1 << 20
            })
        );
        assert_eq!(Mode::parse(b"sampled:0"), None);
        assert_eq!(Mode::parse(b"sampled:"), None);
        assert_eq!(Mode::parse(b"sampled:12x"), None);
        assert_eq!(Mode::parse(b"sampled:99999999999999999999"), None);
        assert_eq!(Mode::parse(b"fast"), None);
        assert_eq!(Mode::parse(b""), None);
        assert_eq!(Mode::parse(b"sampled:0k"), None);
        assert_eq!(Mode::parse(b"sampledx1"), None);
        // Case and surrounding blanks do not matter.
        assert_eq!(Mode::parse(b"FULL"), Some(Mode::Full));
        assert_eq!(Mode::parse(b" Count\n"), Some(Mode::Count));
        assert_eq!(
            Mode::parse(b"Sampled:4K"),
            Some(Mode::Sampled { mean_bytes: 4096 })
        );
        for mode in [Mode::Full, Mode::Count, Mode::Sampled { mean_bytes: 12345 }] {
            assert_eq!(Mode::decode(mode.encode()), mode);
            assert_eq!(Mode::parse(mode.to_string().as_bytes()), Some(mode));
        }
    }
}
