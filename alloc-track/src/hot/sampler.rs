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

use super::thread::{self, ThreadState};

/// Distinct seeds for every thread without a system call.
static SEED: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);

/// A fixed seed for tests: every thread seeded after this call draws the
/// same sequence as in any other run.
pub(crate) fn reseed(seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
    let _ = thread::with(|state| {
        state.rng.set(0);
        state.countdown.set(i64::MIN);
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

/// Counts `size` bytes against this thread's countdown; returns how many
/// allocations this one stands for if it is sampled (at least 1), or 0.
#[inline]
pub(crate) fn sample(state: &ThreadState, size: usize, mean_bytes: u64) -> u32 {
    let left = state.countdown.get();
    let after = left.wrapping_sub(size as i64);
    if left != i64::MIN && after > 0 {
        state.countdown.set(after);
        return 0;
    }
    sampled(state, left == i64::MIN, size, mean_bytes)
}

#[cold]
fn sampled(state: &ThreadState, first_use: bool, size: usize, mean_bytes: u64) -> u32 {
    let mean = mean_bytes as f64;
    state.countdown.set(draw_interval(state, mean));
    if first_use {
        // The thread's first allocation only starts the countdown.
        return sample(state, size, mean_bytes);
    }
    weight(size, mean, uniform(state))
}

/// The number of allocations a sample of `size` stands for: `1 / p` with
/// `p = 1 - exp(-size / mean)`, rounded up or down at random in proportion
/// so that its expectation is exactly `1 / p` (rounding always one way
/// would bias sites of mid-sized blocks).
pub(crate) fn weight(size: usize, mean: f64, uniform: f64) -> u32 {
    let p = -(-(size as f64) / mean).exp_m1();
    // p is NaN for a NaN mean and 0 when size/mean underflows: either way
    // the sample stands for as many allocations as a weight can say.
    if p.is_nan() || p <= 0.0 {
        return u32::MAX;
    }
    let w = (1.0 / p).min(u32::MAX as f64);
    let floor = w.floor();
    let rounded = if uniform < w - floor {
        floor + 1.0
    } else {
        floor
    };
    (rounded as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_unbiased_inverse_probabilities() {
        let mean = 512.0 * 1024.0;
        // Large blocks are always sampled: they stand for themselves.
        assert_eq!(weight(64 << 20, mean, 0.5), 1);
        // A block of the mean size is sampled with p = 1 - 1/e.
        let expected = 1.0 / (1.0 - (-1.0f64).exp());
        let draws = if cfg!(miri) { 1_000 } else { 100_000 };
        let total: u64 = (0..draws)
            .map(|i| u64::from(weight(512 * 1024, mean, (i as f64 + 0.5) / draws as f64)))
            .sum();
        let average = total as f64 / draws as f64;
        assert!(
            (average - expected).abs() < 0.001,
            "{average} vs {expected}"
        );
        // Small blocks stand for many.
        assert_eq!(weight(8, mean, 0.99), 65536);
    }
}
