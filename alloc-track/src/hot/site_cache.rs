//! Each thread's cache of the stacks it interned lately: a stack's hash
//! and depth to its site id, so that most captures find their site without
//! the shared index (`stacks.rs`), whose lookup takes a lock and compares
//! the whole stack with the site's frames, which are seldom in cache.
//!
//! Real programs have many more distinct stacks than a loop: on the
//! benchmark's crates workload (syn, serde_json, regex; 15,500 sites), a
//! 256-slot cache missed 45% of the time, and the misses cost about 80
//! instructions per allocation. The cache therefore grows with the
//! thread's needs: it starts at 1,024 slots (16 KiB) and doubles, up to
//! 16,384 slots (256 KiB), while more than an eighth of its lookups miss.
//! Its memory comes from the tables' arena (`table_memory.rs`: chunks
//! the kernel may back with huge pages, which took about 2% off full
//! mode's time on that workload), is taken only when the thread first
//! interns a stack, and goes back at the thread's exit. Every thread
//! gets its first 16 KiB; all threads' caches together stop growing past
//! that at 64 MiB. The figures stay exact either way: a miss only costs
//! time.
//!
//! A hit is trusted on the stack's 64-bit hash and its depth, without
//! reading the site's frames: two stacks of one depth that differ in a
//! single frame never share a hash (each step of `capture`'s hash, and its
//! finish, is a bijection of the running hash), and stacks that differ in
//! more frames do with a chance of about 2^-64 a pair. The shared index,
//! which creates the sites, compares whole stacks.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::site_id::{SiteId, OVERFLOW_SITE};
use super::table_memory;

/// A slot: a stack's hash and depth, and its site. All zeroes is an empty
/// slot: its id is the overflow site's, which is never remembered, so no
/// lookup matches it.
#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    hash: u64,
    id: SiteId,
    depth: u32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 16);
const _: () = assert!(OVERFLOW_SITE == 0);

const FIRST_SLOTS: usize = 1 << 10;
const MAX_SLOTS: usize = 1 << 14;
/// Every this many lookups, a cache that missed more than an eighth of
/// them doubles.
const REVIEW_EVERY: u32 = 1 << 12;
/// All threads' caches together grow past their first mapping no
/// further than this (a thread's first mapping is always allowed, as the
/// 4 KiB thread-local cache it replaced was).
const ALL_CACHES_LIMIT: usize = 64 << 20;

/// Bytes mapped for all threads' caches, for the tracker's own figure.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// `mask` when the thread has released its cache for good (it is exiting):
/// no lookup hits and nothing is remembered, so that nothing is mapped
/// again after the release.
const RELEASED: usize = usize::MAX;

/// This thread's cache. Plain cells, no destructor: the exit fold releases
/// the mapping (`release`).
struct Cache {
    slots: Cell<*mut Slot>,
    /// Slots minus one; 0 with no mapping yet, [`RELEASED`] after release.
    mask: Cell<usize>,
    lookups: Cell<u32>,
    misses: Cell<u32>,
}

thread_local! {
    static CACHE: Cache = const {
        Cache {
            slots: Cell::new(std::ptr::null_mut()),
            mask: Cell::new(0),
            lookups: Cell::new(0),
            misses: Cell::new(0),
        }
    };
}

/// The site of a stack with this hash and depth, if this thread interned
/// it lately.
#[inline(always)]
pub(crate) fn lookup(hash: u64, depth: usize) -> Option<SiteId> {
    CACHE
        .try_with(|cache| {
            let slots = cache.slots.get();
            if slots.is_null() {
                return None;
            }
            cache.lookups.set(cache.lookups.get().wrapping_add(1));
            // SAFETY: a non-null `slots` is this thread's mapping of
            // `mask + 1` slots (`mask` is not `RELEASED` while it is
            // mapped), and the index is masked.
            let slot = unsafe { *slots.add(hash as usize & cache.mask.get()) };
            (slot.hash == hash && slot.depth as usize == depth && slot.id != OVERFLOW_SITE)
                .then_some(slot.id)
        })
        .ok()
        .flatten()
}

/// Remembers the site of a stack this thread just looked up in the shared
/// index (a miss here). Maps the cache at the thread's first call, and
/// grows it when it misses too often.
#[inline(never)]
pub(crate) fn remember(hash: u64, depth: usize, id: SiteId) {
    if id == OVERFLOW_SITE {
        return;
    }
    let _ = CACHE.try_with(|cache| {
        let mask = cache.mask.get();
        if mask == RELEASED {
            return;
        }
        if cache.slots.get().is_null() {
            map(cache, FIRST_SLOTS);
        } else {
            cache.misses.set(cache.misses.get().wrapping_add(1));
            if cache.lookups.get() >= REVIEW_EVERY {
                review(cache);
            }
        }
        let slots = cache.slots.get();
        if slots.is_null() {
            return;
        }
        let slot = Slot {
            hash,
            id,
            depth: depth as u32,
        };
        // SAFETY: as in `lookup`.
        unsafe { *slots.add(hash as usize & cache.mask.get()) = slot };
    });
}

/// Doubles a cache that missed more than an eighth of its recent lookups,
/// within the limits; starts counting afresh either way.
#[cold]
fn review(cache: &Cache) {
    let (lookups, misses) = (cache.lookups.get(), cache.misses.get());
    cache.lookups.set(0);
    cache.misses.set(0);
    let slots = cache.mask.get() + 1;
    if misses <= lookups / 8 || slots >= MAX_SLOTS {
        return;
    }
    let (old, old_slots) = (cache.slots.get(), slots);
    if !map(cache, slots * 2) {
        return;
    }
    // The entries move over: a doubled cache keeps what it knew.
    let new = cache.slots.get();
    for index in 0..old_slots {
        // SAFETY: `old` is the previous mapping of `old_slots` slots, `new`
        // the new one of twice as many, and the index is masked.
        unsafe {
            let slot = *old.add(index);
            *new.add(slot.hash as usize & cache.mask.get()) = slot;
        }
    }
    unmap(old, old_slots);
}

/// Maps a cache of `slots` slots for this thread (memory from the tables'
/// arena), within the limit of all caches for a cache that grows; true if
/// it did (the old mapping, if any, is the caller's to move and unmap).
fn map(cache: &Cache, slots: usize) -> bool {
    let bytes = slots * std::mem::size_of::<Slot>();
    if slots > FIRST_SLOTS && MAPPED.load(Ordering::Relaxed) + bytes > ALL_CACHES_LIMIT {
        return false;
    }
    let memory = table_memory::alloc_zeroed(bytes).cast::<Slot>();
    if memory.is_null() {
        return false;
    }
    MAPPED.fetch_add(bytes, Ordering::Relaxed);
    cache.slots.set(memory);
    cache.mask.set(slots - 1);
    true
}

fn unmap(slots: *mut Slot, count: usize) {
    let bytes = count * std::mem::size_of::<Slot>();
    // SAFETY: `slots` came from `table_memory::alloc_zeroed` in `map`
    // for exactly `count` slots, and nothing refers to it any more.
    unsafe { table_memory::free(slots.cast(), bytes) };
    MAPPED.fetch_sub(bytes, Ordering::Relaxed);
}

/// At the thread's exit (or when it learns that no exit fold will run for
/// it): gives the cache's memory back, for good.
pub(crate) fn release() {
    let _ = CACHE.try_with(|cache| {
        let slots = cache.slots.replace(std::ptr::null_mut());
        let mask = cache.mask.replace(RELEASED);
        if !slots.is_null() && mask != RELEASED {
            unmap(slots, mask + 1);
        }
    });
}

/// Bytes mapped for all threads' caches.
pub(crate) fn heap_bytes() -> usize {
    MAPPED.load(Ordering::Relaxed)
}

/// This thread's cache size in slots (0: none mapped), for tests.
#[cfg(test)]
fn slots_of_this_thread() -> usize {
    CACHE.with(|cache| match cache.mask.get() {
        RELEASED => 0,
        _ if cache.slots.get().is_null() => 0,
        mask => mask + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes that all land in different slots of the first cache, and
    /// keep doing so as it grows (they differ in the low bits).
    fn hash(i: usize) -> u64 {
        0x5eed_0000_0000_0000 | i as u64
    }

    #[test]
    fn a_remembered_stack_is_found_by_its_hash_and_depth_alone() {
        std::thread::spawn(|| {
            assert_eq!(lookup(hash(1), 12), None);
            assert_eq!(
                slots_of_this_thread(),
                0,
                "nothing mapped before the first remember"
            );
            remember(hash(1), 12, 77);
            assert_eq!(slots_of_this_thread(), FIRST_SLOTS);
            assert_eq!(lookup(hash(1), 12), Some(77));
            assert_eq!(lookup(hash(1), 13), None, "another depth");
            assert_eq!(lookup(hash(2), 12), None, "another hash");
            // The overflow site is never remembered: an empty slot's id.
            remember(hash(3), 5, OVERFLOW_SITE);
            assert_eq!(lookup(hash(3), 5), None);
            // An empty slot matches nothing, not even an all-zero key.
            assert_eq!(lookup(0, 0), None);
        })
        .join()
        .unwrap();
    }

    /// Held by the tests whose outcome depends on the limit of all caches,
    /// which one of them moves.
    static LIMIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_cache_that_misses_often_doubles_and_keeps_what_it_knew() {
        let _limit = LIMIT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::thread::spawn(|| {
            remember(hash(0), 1, 1);
            let mut size = slots_of_this_thread();
            assert_eq!(size, FIRST_SLOTS);
            // Twice as many stacks as slots, each looked up and remembered
            // in turn: at least half the lookups miss. (Under Miri, enough
            // for one doubling.)
            let stacks = if cfg!(miri) {
                FIRST_SLOTS * 2
            } else {
                MAX_SLOTS * 2
            };
            let rounds = if cfg!(miri) { 3 } else { 8 };
            for _ in 0..rounds {
                for i in 1..stacks {
                    if lookup(hash(i), 1).is_none() {
                        remember(hash(i), 1, i as SiteId);
                    }
                }
                let grown = slots_of_this_thread();
                assert!(grown >= size, "{grown} < {size}");
                size = grown;
            }
            if !cfg!(miri) {
                assert_eq!(size, MAX_SLOTS, "it grows to the limit, no further");
            }
            assert!(size > FIRST_SLOTS);
            // The last stack remembered is still there after the growths.
            assert_eq!(lookup(hash(stacks - 1), 1), Some((stacks - 1) as SiteId));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_cache_that_hits_stays_small() {
        std::thread::spawn(|| {
            for i in 0..64 {
                remember(hash(i), 3, i as SiteId + 1);
            }
            // Past one review's worth of lookups.
            for _ in 0..REVIEW_EVERY as usize / 64 + 1 {
                for i in 0..64 {
                    assert_eq!(lookup(hash(i), 3), Some(i as SiteId + 1));
                }
            }
            // A miss triggers the review; it finds few misses.
            remember(hash(999), 3, 5);
            assert_eq!(slots_of_this_thread(), FIRST_SLOTS);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn past_the_limit_of_all_caches_a_thread_gets_its_first_cache_but_no_growth() {
        let _limit = LIMIT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        MAPPED.fetch_add(ALL_CACHES_LIMIT, Ordering::Relaxed);
        let outcome = std::thread::spawn(|| {
            remember(hash(0), 1, 1);
            let first = slots_of_this_thread();
            for _ in 0..4 {
                for i in 1..FIRST_SLOTS * 4 {
                    if lookup(hash(i), 1).is_none() {
                        remember(hash(i), 1, i as SiteId);
                    }
                }
            }
            (first, slots_of_this_thread())
        })
        .join();
        MAPPED.fetch_sub(ALL_CACHES_LIMIT, Ordering::Relaxed);
        assert_eq!(outcome.unwrap(), (FIRST_SLOTS, FIRST_SLOTS));
    }

    #[test]
    fn a_released_cache_is_unmapped_and_never_comes_back() {
        std::thread::spawn(|| {
            remember(hash(1), 4, 9);
            assert!(heap_bytes() >= FIRST_SLOTS * std::mem::size_of::<Slot>());
            release();
            assert_eq!(slots_of_this_thread(), 0);
            assert_eq!(lookup(hash(1), 4), None);
            remember(hash(1), 4, 9);
            assert_eq!(
                slots_of_this_thread(),
                0,
                "nothing mapped after the release"
            );
            assert_eq!(lookup(hash(1), 4), None);
        })
        .join()
        .unwrap();
    }
}
