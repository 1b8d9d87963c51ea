//! Poisson sampling by bytes: each thread counts down a random number of
//! bytes, drawn from an exponential distribution with the configured mean,
//! and records the allocation that crosses zero.
//!
//! A block of `size` bytes is then recorded with probability
//! `p = 1 - exp(-size / mean)`, whatever the sizes around it (the
//! exponential distribution has no memory), and standing for `1 / p`
//! blocks makes every per-site sum an unbiased estimate. The same scheme
//! as jemalloc's, tcmalloc's and Go's heap profilers.

use std::sync::atomic::{AtomicU64, Ordering};

use super::config::Mode;
use super::live_block::LiveBlock;
use super::site_id::INTERNAL_SITE;
use super::thread::{self, ThreadState};

/// Distinct seeds for every thread without a system call.
static SEED: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);

/// A fixed seed for tests: every thread seeded after this call draws the
/// same sequence as in any other run.
pub(crate) fn reseed(seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
    let _ = thread::with(|state| {
        // Folds the fast path's budget into the countdown (closing it), so
        // that the reset below is not undone.
        state.close();
        state.rng.set(0);
        state.countdown.set(0);
    });
}

fn next_random(state: &ThreadState) -> u64 {
    let mut x = state.rng.get();
    if x == 0 {
        // splitmix64 of a per-thread counter: well-spread, never 0.
        let mut z = SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x = (z ^ (z >> 31)) | 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.rng.set(x);
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// A uniform number in (0, 1].
fn uniform(state: &ThreadState) -> f64 {
    ((next_random(state) >> 11) + 1) as f64 / (1u64 << 53) as f64
}

fn draw_interval(state: &ThreadState, mean: f64) -> i64 {
    let interval = -uniform(state).ln() * mean;
    interval.min(i64::MAX as f64 / 2.0) as i64
}

/// Counts `size` bytes against this thread's countdown; true if this
/// allocation is a sample. The fast path has already let through every
/// allocation smaller than the countdown; this is the slow path's check.
#[inline]
pub(crate) fn sample(state: &ThreadState, size: usize, mean_bytes: u64) -> bool {
    // What the fast path allocated first, so that the countdown is exact.
    state.close();
    let left = state.countdown.get();
    // A layout's size never exceeds `isize::MAX`.
    let size = size as i64;
    if size < left {
        state.countdown.set(left - size);
        return false;
    }
    sampled(state, size, mean_bytes)
}

#[cold]
fn sampled(state: &ThreadState, size: i64, mean_bytes: u64) -> bool {
    // An unseeded generator means the countdown never started (or a test
    // reseeded it): the thread's first allocation only starts it.
    let first_use = state.rng.get() == 0;
    state.countdown.set(draw_interval(state, mean_bytes as f64));
    if first_use {
        return sample(state, size as usize, mean_bytes);
    }
    true
}

/// Count mode: nothing is sampled, so the countdown is set beyond reach
/// and the fast path never stops for it.
#[inline]
pub(crate) fn never_sample(state: &ThreadState) {
    state.close();
    state.countdown.set(i64::MAX);
}

/// Site figures count blocks in 1/1024ths: a sample stands for `1 / p`
/// blocks, rarely a whole number, and fixed-point sums keep the estimate
/// unbiased where rounding each sample would not. A block in full mode
/// weighs exactly this.
pub(crate) const WEIGHT_ONE: u64 = 1024;

/// The weight (in 1/1024ths of a block) of a sample of `size` bytes: the
/// inverse of its probability `p = 1 - exp(-size / mean)` of being sampled.
/// Computed again at the sample's free, so the same amount leaves as came.
pub(crate) fn sample_weight(size: usize, mean_bytes: u64) -> u64 {
    let p = -(-(size as f64) / mean_bytes as f64).exp_m1();
    // p is NaN for a NaN ratio and 0 when size/mean underflows: either way
    // the sample stands for as many blocks as the weight can say.
    if p.is_nan() || p <= 0.0 {
        return 1 << 52;
    }
    ((WEIGHT_ONE as f64 / p).round().min((1u64 << 52) as f64) as u64).max(WEIGHT_ONE)
}

/// The bytes `weight` (in 1/1024ths) blocks of `size` bytes stand for,
/// rounded to the nearest byte.
#[inline]
pub(crate) fn weighted_bytes(size: u64, weight: u64) -> u64 {
    let scaled = u128::from(size) * u128::from(weight) + u128::from(WEIGHT_ONE / 2);
    u64::try_from(scaled / u128::from(WEIGHT_ONE)).unwrap_or(u64::MAX)
}

/// Whole blocks from a count in 1/1024ths, rounded to the nearest.
#[inline]
pub(crate) fn whole_blocks(weight: u64) -> u64 {
    weight.saturating_add(WEIGHT_ONE / 2) / WEIGHT_ONE
}

/// The weight (in 1/1024ths) a recorded block has in the site figures:
/// one block in full mode, its sample weight if it is a sample, nothing
/// if it is recorded only for a `measure` or is the tracker's own.
#[inline]
pub(crate) fn weight_of(block: &LiveBlock, mode: Mode) -> u64 {
    if block.site() == INTERNAL_SITE {
        return 0;
    }
    match mode {
        Mode::Full => WEIGHT_ONE,
        Mode::Sampled { mean_bytes } if block.sampled() => sample_weight(block.size(), mean_bytes),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_inverse_probabilities_in_fixed_point() {
        let mean = 512 * 1024;
        // Large blocks are always sampled: they stand for themselves.
        assert_eq!(sample_weight(64 << 20, mean), WEIGHT_ONE);
        // A block of the mean size is sampled with p = 1 - 1/e.
        let expected = WEIGHT_ONE as f64 / (1.0 - (-1.0f64).exp());
        assert_eq!(sample_weight(512 * 1024, mean), expected.round() as u64);
        // Small blocks stand for many: 1/p = 65536.5 for 8 bytes.
        assert_eq!(whole_blocks(sample_weight(8, mean)), 65537);
        assert_eq!(weighted_bytes(8, sample_weight(8, mean)), 8 * 65536 + 4);
        // Full mode's weight is exact.
        assert_eq!(weighted_bytes(12345, WEIGHT_ONE), 12345);
        assert_eq!(whole_blocks(7 * WEIGHT_ONE), 7);
    }
}
