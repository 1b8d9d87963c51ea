//! The hot path: everything the allocator methods touch on every call.
//!
//! The modules here obey the contract written at the top of
//! `tracker.rs`: they never allocate through the global allocator (their
//! own memory comes straight from the kernel: `pages.rs`), never panic,
//! never do I/O, never resolve symbols, and never hold a lock while a stack
//! is captured. The cold path (snapshots, symbols, dumps) reads their state
//! through the small accessor functions each module exports.

pub(crate) mod capture;
pub(crate) mod config;
pub(crate) mod counters;
pub(crate) mod filter;
#[cfg(unix)]
pub(crate) mod fork;
pub(crate) mod live;
pub(crate) mod measuring;
pub(crate) mod pages;
pub(crate) mod raw_map;
pub(crate) mod record;
pub(crate) mod sampler;
pub(crate) mod scopes;
pub(crate) mod spin;
pub(crate) mod stacks;
pub(crate) mod thread;
pub(crate) mod thread_totals;
