//! Per-scope figures: what the blocks allocated inside each
//! [`scope`](fn@crate::scope) add up to. A fixed array, so the hot path
//! updates a scope's counters with atomics and no lookup; only blocks with
//! a scope touch it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::sampler;

/// Scope ids run from 1 to `MAX_SCOPES - 1`; the last one also collects
/// every scope named after the table filled.
pub(crate) const MAX_SCOPES: usize = 1024;

pub(crate) struct ScopeCounters {
    pub(crate) total_bytes: AtomicU64,
    pub(crate) total_blocks: AtomicU64,
}

static SCOPES: [ScopeCounters; MAX_SCOPES] = [const {
    ScopeCounters {
        total_bytes: AtomicU64::new(0),
        total_blocks: AtomicU64::new(0),
    }
}; MAX_SCOPES];

/// Counts an allocation that stands for `weight` blocks (in 1/1024ths, as
/// the site figures count them) in `scope`.
#[inline]
pub(crate) fn count_allocation(scope: u16, size: u64, weight: u64) {
    if scope == 0 || weight == 0 {
        return;
    }
    if let Some(counters) = SCOPES.get(usize::from(scope)) {
        counters
            .total_bytes
            .fetch_add(sampler::weighted_bytes(size, weight), Ordering::Relaxed);
        counters.total_blocks.fetch_add(weight, Ordering::Relaxed);
    }
}

/// The scope's allocation totals: (bytes, blocks).
pub(crate) fn totals(scope: u16) -> (u64, u64) {
    SCOPES.get(usize::from(scope)).map_or((0, 0), |c| {
        (
            c.total_bytes.load(Ordering::Relaxed),
            sampler::whole_blocks(c.total_blocks.load(Ordering::Relaxed)),
        )
    })
}
