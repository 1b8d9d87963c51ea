//! [`limits`]: assertions on what a block of code allocates, for tests.
//!
//! The analogue of pytest-memray's `limit_memory` and `limit_leaks` and of
//! Django's `assertNumQueries`: bound the allocations, bytes, peak and
//! retained memory of a closure, and on failure see which call sites broke
//! the bound. Built on [`measure`](fn@crate::measure), so only the calling
//! thread's allocations count and the figures are exact under parallel
//! `cargo test`.

use std::fmt;

use crate::human::{Bytes, Count};
use crate::Diff;

/// Starts a set of limits; add bounds, then [`check`](Limits::check) a
/// closure against them.
///
/// ```
/// # use std::alloc::System;
/// # #[global_allocator]
/// # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
/// fn render(items: &[u32]) -> String {
///     let mut out = String::with_capacity(items.len() * 11);
///     for item in items {
///         use std::fmt::Write;
///         write!(out, "{item},").unwrap(); // into the one buffer
///     }
///     out
/// }
///
/// # fn main() {
/// let text = alloc_track::limits()
///     .max_blocks(1) // the one buffer
///     .max_peak_bytes(1 << 20)
///     .check(|| render(&[1, 2, 3]));
/// assert_eq!(text, "1,2,3,");
/// # }
/// ```
pub fn limits() -> Limits {
    Limits::default()
}

/// Upper bounds on what a closure allocates on its thread. Every bound is
/// optional; a check with none set always passes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "limits do nothing until `check` runs a closure against them"]
pub struct Limits {
    blocks: Option<u64>,
    bytes: Option<u64>,
    peak_bytes: Option<u64>,
    retained_bytes: Option<u64>,
    retained_blocks: Option<u64>,
}

impl Limits {
    /// At most `n` allocations (a `realloc` counts as one), freed or not.
    pub fn max_blocks(mut self, n: u64) -> Self {
        self.blocks = Some(n);
        self
    }

    /// At most `n` bytes allocated in all, freed or not.
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.bytes = Some(n);
        self
    }

    /// At most `n` bytes held at once above what the thread held when the
    /// closure started (pytest-memray's `limit_memory`).
    pub fn max_peak_bytes(mut self, n: u64) -> Self {
        self.peak_bytes = Some(n);
        self
    }

    /// At most `n` bytes allocated by the closure and still live when it
    /// returns, the value it returns included (`limit_leaks`). `0`: the
    /// closure leaves nothing behind.
    pub fn max_retained_bytes(mut self, n: u64) -> Self {
        self.retained_bytes = Some(n);
        self
    }

    /// At most `n` blocks allocated by the closure and still live when it
    /// returns.
    pub fn max_retained_blocks(mut self, n: u64) -> Self {
        self.retained_blocks = Some(n);
        self
    }

    /// Runs `f` under [`measure`](fn@crate::measure) and returns its value.
    ///
    /// # Panics
    ///
    /// If any limit is exceeded, with a message naming each exceeded limit
    /// and the per-site table of what the closure allocated; also in the
    /// cases where [`measure`](fn@crate::measure) panics.
    ///
    /// Past 1,023 threads measuring at once, retained figures are an upper
    /// bound (see [`measure`](fn@crate::measure)): a retained limit may then
    /// fail when the exact figure would pass, never the other way round,
    /// and the message says the figures are approximate. Every other limit
    /// stays exact.
    #[track_caller]
    pub fn check<R>(&self, f: impl FnOnce() -> R) -> R {
        let (value, diff) = crate::measure(f);
        if let Err(exceeded) = self.verify(&diff) {
            panic!("{exceeded}");
        }
        value
    }

    /// Checks an existing [`Diff`] (from [`measure`](fn@crate::measure) or
    /// two snapshots) against the limits, without panicking. A limit on
    /// the peak fails for a diff of two snapshots, which has no peak of
    /// its own.
    pub fn verify(&self, diff: &Diff) -> Result<(), Exceeded> {
        let mut broken = Vec::new();
        let mut bound = |what: &'static str, limit: Option<u64>, actual: Option<u64>, bytes| {
            let Some(limit) = limit else { return };
            if actual.map_or(true, |actual| actual > limit) {
                broken.push(Broken {
                    what,
                    limit,
                    actual,
                    bytes,
                });
            }
        };
        bound("allocations", self.blocks, Some(diff.total_blocks()), false);
        bound(
            "bytes allocated",
            self.bytes,
            Some(diff.total_bytes()),
            true,
        );
        bound("peak bytes", self.peak_bytes, diff.peak_bytes(), true);
        bound(
            "retained bytes",
            self.retained_bytes,
            Some(diff.retained_bytes()),
            true,
        );
        bound(
            "retained blocks",
            self.retained_blocks,
            Some(diff.retained_blocks()),
            false,
        );
        if broken.is_empty() {
            Ok(())
        } else {
            Err(Exceeded {
                broken,
                diff: diff.clone(),
            })
        }
    }
}

/// The limits a closure exceeded, and what it allocated.
///
/// `Display` names each exceeded limit with the actual figure, then the
/// per-site table of the [`Diff`], so a failing test says where the
/// allocations come from.
#[derive(Clone, Debug)]
pub struct Exceeded {
    broken: Vec<Broken>,
    diff: Diff,
}

impl Exceeded {
    /// What the closure allocated.
    pub fn diff(&self) -> &Diff {
        &self.diff
    }
}

#[derive(Clone, Copy, Debug)]
struct Broken {
    what: &'static str,
    limit: u64,
    actual: Option<u64>,
    bytes: bool,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "alloc-track limits exceeded:")?;
        for broken in &self.broken {
            let show = |n: u64| {
                if broken.bytes {
                    Bytes(n).to_string()
                } else {
                    Count(n).to_string()
                }
            };
            match broken.actual {
                Some(actual) => writeln!(
                    f,
                    "  {}: {}, limit {}",
                    broken.what,
                    show(actual),
                    show(broken.limit)
                )?,
                None => writeln!(
                    f,
                    "  {}: not measured (a diff of two snapshots has no peak), limit {}",
                    broken.what,
                    show(broken.limit)
                )?,
            }
        }
        write!(f, "{}", self.diff)
    }
}

impl std::error::Error for Exceeded {}
