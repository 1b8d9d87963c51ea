//! The partial modes' fast path under load: threads allocating,
//! reallocating and freeing at once, half of the blocks freed by another
//! thread than the one that allocated them, blocks large enough to cross
//! the 64 KiB publish step, in count mode and in sampled mode with a small
//! mean (so that samples, their frees and the address filter are busy
//! too). At the end the process-wide totals moved by exactly what the
//! threads did, and the live figures are back where they started.
//!
//! A plain `main` (`harness = false`): process-wide totals are only exact
//! when no other thread allocates. It runs the workload itself in count
//! mode (the mode chosen in code), then re-executes itself with
//! `ALLOC_TRACK_MODE=sampled:4096` for the sampled run.

use std::alloc::{alloc, dealloc, realloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::thread;

use alloc_track::{snapshot, Mode, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System).counting();

const THREADS: usize = 4;
const STEPS: usize = 50_000;
const EXCHANGE_SLOTS: usize = 64;

/// Slots through which threads hand blocks to each other: an address and
/// its size per slot, without allocating. A thread takes a slot by
/// swapping its address word to `TAKEN`, which keeps the two words
/// together.
struct Exchange {
    blocks: [AtomicUsize; EXCHANGE_SLOTS],
    sizes: [AtomicUsize; EXCHANGE_SLOTS],
}

const TAKEN: usize = usize::MAX;

impl Exchange {
    const fn new() -> Self {
        Exchange {
            blocks: [const { AtomicUsize::new(0) }; EXCHANGE_SLOTS],
            sizes: [const { AtomicUsize::new(0) }; EXCHANGE_SLOTS],
        }
    }

    /// Puts a block in `slot`, returning the block that was there.
    fn swap(&self, slot: usize, block: usize, size: usize) -> Option<(usize, usize)> {
        let slot = slot % EXCHANGE_SLOTS;
        // Take the slot: spin while another thread holds it.
        let old = loop {
            let old = self.blocks[slot].swap(TAKEN, Ordering::Acquire);
            if old != TAKEN {
                break old;
            }
            std::hint::spin_loop();
        };
        let old_size = self.sizes[slot].swap(size, Ordering::Relaxed);
        self.blocks[slot].store(block, Ordering::Release);
        (old != 0).then_some((old, old_size))
    }

    fn drain(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..EXCHANGE_SLOTS).filter_map(|slot| self.swap(slot, 0, 0))
    }
}

static EXCHANGE: Exchange = Exchange::new();
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BLOCKS: AtomicU64 = AtomicU64::new(0);

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Mostly small blocks, one in 64 larger than a publish step.
    fn size(&mut self) -> usize {
        if self.next().is_multiple_of(64) {
            70_000 + (self.next() % 200_000) as usize
        } else {
            1 + (self.next() % 3000) as usize
        }
    }
}

/// One thread's work. Every allocation and realloc is added to the
/// expected totals; every block ends up freed (here, by another thread, or
/// from the exchange at the end).
fn work(index: usize) {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
    let mut ring = [(0usize, 0usize); 32];
    let (mut bytes, mut blocks) = (0u64, 0u64);
    for step in 0..STEPS {
        let slot = (rng.next() % ring.len() as u64) as usize;
        let (block, size) = ring[slot];
        match rng.next() % 4 {
            // Grow or shrink the block in the ring.
            0 if block != 0 => {
                let new_size = rng.size();
                // SAFETY: `block` was allocated with `layout(size)`.
                let moved = unsafe { realloc(block as *mut u8, layout(size), new_size) };
                assert!(!moved.is_null());
                ring[slot] = (moved as usize, new_size);
                (bytes, blocks) = (bytes + new_size as u64, blocks + 1);
            }
            // Hand the block to another thread, free what it gives back.
            1 if block != 0 && step % 2 == 0 => {
                ring[slot] = (0, 0);
                if let Some((other, other_size)) = EXCHANGE.swap(rng.next() as usize, block, size) {
                    // SAFETY: blocks in the exchange came with their layout.
                    unsafe { dealloc(other as *mut u8, layout(other_size)) };
                }
            }
            // Replace it with a new one.
            _ => {
                if block != 0 {
                    // SAFETY: as above.
                    unsafe { dealloc(block as *mut u8, layout(size)) };
                }
                let size = rng.size();
                // SAFETY: non-zero size.
                let fresh = unsafe { alloc(layout(size)) };
                assert!(!fresh.is_null());
                ring[slot] = (fresh as usize, size);
                (bytes, blocks) = (bytes + size as u64, blocks + 1);
            }
        }
    }
    for (block, size) in ring {
        if block != 0 {
            // SAFETY: as above.
            unsafe { dealloc(block as *mut u8, layout(size)) };
        }
    }
    ALLOCATED_BYTES.fetch_add(bytes, Ordering::Relaxed);
    ALLOCATED_BLOCKS.fetch_add(blocks, Ordering::Relaxed);
}

fn run() {
    // Four meeting points: workers ready (their first allocation claimed
    // their totals slot), figures read and work started, work done, figures
    // read again and workers released.
    let ready = Barrier::new(THREADS + 1);
    let start = Barrier::new(THREADS + 1);
    let done = Barrier::new(THREADS + 1);
    let finish = Barrier::new(THREADS + 1);
    thread::scope(|scope| {
        for index in 0..THREADS {
            let (ready, start, done, finish) = (&ready, &start, &done, &finish);
            scope.spawn(move || {
                drop(std::hint::black_box(Box::new(index)));
                ready.wait();
                start.wait();
                work(index);
                done.wait();
                // Parked, allocating nothing, while the figures are read.
                finish.wait();
            });
        }
        ready.wait();
        let before = snapshot();
        start.wait();
        done.wait();
        for (block, size) in EXCHANGE.drain() {
            // SAFETY: blocks in the exchange came with their layout.
            unsafe { dealloc(block as *mut u8, layout(size)) };
        }
        let after = snapshot();
        finish.wait();
        let mode = alloc_track::mode();
        assert_eq!(
            after.total_bytes() - before.total_bytes(),
            ALLOCATED_BYTES.load(Ordering::Relaxed),
            "{mode}: {after}"
        );
        assert_eq!(
            after.total_blocks() - before.total_blocks(),
            ALLOCATED_BLOCKS.load(Ordering::Relaxed),
            "{mode}"
        );
        assert_eq!(after.live_bytes(), before.live_bytes(), "{mode}");
        assert_eq!(after.live_blocks(), before.live_blocks(), "{mode}");
        assert!(after.peak_bytes() >= after.live_bytes());
        assert_eq!(after.health().unrecorded_allocations, 0);
        if let Mode::Sampled { .. } = mode {
            // With a 4 KiB mean, tens of thousands of samples were taken
            // (and all freed again): the slow path was busy.
            assert!(
                after.sites().iter().any(|site| site.total_blocks() > 0),
                "no samples taken"
            );
        }
    });
}

fn main() {
    run();
    if std::env::var_os("ALLOC_TRACK_MODE").is_some() {
        // The child: one run is all it does.
        println!(
            "stress_partial ({}): 1 passed, 0 failed",
            alloc_track::mode()
        );
        return;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .env("ALLOC_TRACK_MODE", "sampled:4096")
        .status()
        .unwrap();
    assert!(status.success(), "the sampled run failed");
    println!("stress_partial (count): 1 passed, 0 failed");
}
