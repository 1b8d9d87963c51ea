//! Full mode holds each thread's newest block back from the live table
//! until the thread allocates again (`hot/held_block.rs`). Such a block
//! must still be everywhere a live block is: in snapshots while its thread
//! is parked, found when another thread frees it, in the table after its
//! thread exits, and in a forked child, which lacks the thread holding it.
//!
//! Each check reads the snapshot's live figures, which in full mode come
//! from a walk of the live records: a held block the walk misses, or one
//! that a free on another thread does not find, shows in them.
//!
//! A plain program (`harness = false`): no other test's threads allocate
//! meanwhile, which the exact comparison needs. A watchdog ends a run that
//! hangs.

mod common;

use std::alloc::{alloc, dealloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use alloc_track::{Snapshot, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

/// Sizes no other block of this program has.
const PARKED: usize = 77_777;
const EXITED: usize = 66_666;
const FORKED: usize = 55_555;
/// Blocks of the moving-blocks check, in two sizes taken in turn.
const KEPT: [usize; 2] = [33_336, 22_224];
/// Blocks of the hand-over check: sizes 44,448 to 44,560, 16 apart.
const HANDED: usize = 44_448;
/// Blocks of the site-figures check, allocated at one site, and the block
/// it reallocates.
const COUNTED: usize = 12_347;
const REALLOCATED: usize = 23_459;

fn main() {
    common::start_watchdog("held_block", Duration::from_secs(120));
    let _ = black_box(vec![0u8; 16]); // the tracker is settled
    a_parked_threads_newest_block_is_live_and_another_thread_frees_it();
    a_block_held_at_its_threads_exit_stays_live();
    a_forked_child_has_the_blocks_its_lost_threads_held();
    blocks_handed_to_other_threads_are_freed_once_under_snapshots();
    a_snapshot_sees_every_block_live_throughout_it_while_blocks_move();
    a_sites_figures_count_its_held_blocks_once_whichever_way_they_leave();
    println!("held_block: 6 checks passed");
}

/// The live bytes the snapshot's sites hold in blocks of `size` bytes.
fn live_of_size(snapshot: &Snapshot, size: u64) -> u64 {
    snapshot
        .sites()
        .iter()
        .filter(|site| site.live_bytes() % size == 0 && site.live_bytes() > 0)
        .filter(|site| site.live_blocks() == site.live_bytes() / size)
        .map(|site| site.live_bytes())
        .sum()
}

/// A thread that allocates one block of `size` bytes as its last
/// allocation, publishes its address, and parks (sleeping allocates
/// nothing) until `release` is set.
fn hold_one_block(
    size: usize,
    address: &'static AtomicUsize,
    release: &'static AtomicBool,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        // SAFETY: a non-zero size with alignment 8.
        let block = unsafe { alloc(Layout::from_size_align(size, 8).unwrap()) };
        address.store(block as usize, Ordering::Release);
        while !release.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(1));
        }
    })
}

fn wait_for(address: &AtomicUsize) -> *mut u8 {
    let start = Instant::now();
    loop {
        let block = address.load(Ordering::Acquire);
        if block != 0 {
            return block as *mut u8;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no block");
        thread::yield_now();
    }
}

/// Checks that the block of `size` bytes at `block` is live, frees it on
/// this thread, and checks that it no longer is.
fn live_until_freed(block: *mut u8, size: usize) {
    let before = alloc_track::snapshot();
    assert_eq!(live_of_size(&before, size as u64), size as u64, "live");
    free(block, size);
    let after = alloc_track::snapshot();
    assert_eq!(live_of_size(&after, size as u64), 0, "freed");
    assert_eq!(before.live_bytes() - after.live_bytes(), size as u64);
}

fn free(block: *mut u8, size: usize) {
    // SAFETY: `block` came from `alloc` with this layout and is freed once.
    unsafe { dealloc(block, Layout::from_size_align(size, 8).unwrap()) };
}

fn a_parked_threads_newest_block_is_live_and_another_thread_frees_it() {
    static ADDRESS: AtomicUsize = AtomicUsize::new(0);
    static RELEASE: AtomicBool = AtomicBool::new(false);
    let parked = hold_one_block(PARKED, &ADDRESS, &RELEASE);
    // Freed on this thread while its own thread still holds it back.
    live_until_freed(wait_for(&ADDRESS), PARKED);
    RELEASE.store(true, Ordering::Release);
    parked.join().unwrap();
}

fn a_block_held_at_its_threads_exit_stays_live() {
    static ADDRESS: AtomicUsize = AtomicUsize::new(0);
    static RELEASE: AtomicBool = AtomicBool::new(true);
    hold_one_block(EXITED, &ADDRESS, &RELEASE).join().unwrap();
    live_until_freed(wait_for(&ADDRESS), EXITED);
}

fn a_forked_child_has_the_blocks_its_lost_threads_held() {
    static ADDRESS: AtomicUsize = AtomicUsize::new(0);
    static RELEASE: AtomicBool = AtomicBool::new(false);
    let parked = hold_one_block(FORKED, &ADDRESS, &RELEASE);
    let block = wait_for(&ADDRESS);
    // SAFETY: the child takes snapshots (the tracker's fork handlers make
    // that safe), frees one block and leaves with `_exit`.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: a timer that ends this child if it hangs.
        unsafe { libc::alarm(30) };
        let outcome = std::panic::catch_unwind(|| live_until_freed(block, FORKED));
        // SAFETY: ends the child without running the parent's exit code.
        unsafe { libc::_exit(if outcome.is_ok() { 0 } else { 1 }) };
    }
    assert!(child > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waits for our own child, writing into a local; the watchdog
    // ends the whole program if the child hangs.
    let waited = unsafe { libc::waitpid(child, &mut status, 0) };
    assert_eq!(waited, child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child's checks failed (status {status})"
    );
    RELEASE.store(true, Ordering::Release);
    parked.join().unwrap();
    free(block, FORKED);
}

/// Producers hand each block they allocate to consumers, which free it
/// while its producer may be holding it back or moving it into the table at
/// that very moment; a snapshot thread walks everything meanwhile. Every
/// block must be found by its free exactly once: none left live at the end.
fn blocks_handed_to_other_threads_are_freed_once_under_snapshots() {
    use std::sync::mpsc;
    const PER_PRODUCER: usize = 20_000;
    static DONE: AtomicBool = AtomicBool::new(false);
    let size_of = |i: usize| HANDED + (i % 8) * 16;
    let (sender, receiver) = mpsc::sync_channel::<(usize, usize)>(64);
    let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let sender = sender.clone();
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    let size = size_of(i);
                    // SAFETY: a non-zero size with alignment 8.
                    let block = unsafe { alloc(Layout::from_size_align(size, 8).unwrap()) };
                    sender.send((block as usize, size)).unwrap();
                }
            })
        })
        .collect();
    drop(sender);
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let receiver = receiver.clone();
            thread::spawn(move || loop {
                let next = receiver.lock().unwrap().recv();
                match next {
                    Ok((block, size)) => free(block as *mut u8, size),
                    Err(_) => break,
                }
            })
        })
        .collect();
    let snapshots = thread::spawn(|| {
        let mut taken = 0;
        while !DONE.load(Ordering::Acquire) {
            black_box(alloc_track::snapshot());
            taken += 1;
        }
        taken
    });
    for thread in producers.into_iter().chain(consumers) {
        thread.join().unwrap();
    }
    DONE.store(true, Ordering::Release);
    assert!(snapshots.join().unwrap() > 0);
    let after = alloc_track::snapshot();
    let ours: Vec<_> = after
        .sites()
        .iter()
        .filter(|site| site.total_bytes() >= (HANDED * PER_PRODUCER) as u64)
        .filter(|site| {
            site.stack()
                .frames()
                .iter()
                .any(|frame| frame.function.contains("blocks_handed_to_other_threads"))
        })
        .collect();
    assert!(!ours.is_empty(), "the producers' site");
    let left: u64 = ours.iter().map(|site| site.live_blocks()).sum();
    assert_eq!(
        left, 0,
        "handed-over blocks still live after all were freed"
    );
}

/// A thread keeps allocating blocks it keeps, each held back until its
/// next allocation moves it into the table, while snapshots are taken: every
/// block allocated before a snapshot began must be in it, whichever of the
/// two places the walk found it in (a walk of the table, then of the held
/// blocks, misses a block that moves between the two). The kept blocks take
/// two sizes in turn, so that a missed block is not made up for by the next
/// one, held by then, in the count of its size.
fn a_snapshot_sees_every_block_live_throughout_it_while_blocks_move() {
    const BLOCKS: usize = 2_000;
    static KEPT_SO_FAR: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
    static DONE: AtomicBool = AtomicBool::new(false);
    let keeper = thread::spawn(|| {
        let mut kept = Vec::with_capacity(BLOCKS);
        for i in 0..BLOCKS {
            // One call site per size, so that each size has sites of its own.
            let block = if i % 2 == 0 {
                keep_one_block_of_the_first_size()
            } else {
                keep_one_block_of_the_second_size()
            };
            kept.push((block, KEPT[i % 2]));
            KEPT_SO_FAR[i % 2].fetch_add(1, Ordering::Release);
            // Held meanwhile; then moved into the table by the next
            // allocation, which is freed at once.
            thread::sleep(Duration::from_micros(50));
            drop(black_box(Box::new(i)));
        }
        DONE.store(true, Ordering::Release);
        kept
    });
    let mut snapshots = 0;
    while !DONE.load(Ordering::Acquire) {
        let before = KEPT_SO_FAR
            .each_ref()
            .map(|n| n.load(Ordering::Acquire) as u64);
        let snapshot = alloc_track::snapshot();
        for (size, before) in KEPT.into_iter().zip(before) {
            let seen: u64 = snapshot
                .sites()
                .iter()
                .filter(|site| site.live_blocks() > 0)
                .filter(|site| site.live_bytes() == site.live_blocks() * size as u64)
                .map(|site| site.live_blocks())
                .sum();
            assert!(
                seen >= before,
                "{seen} kept blocks of {size} bytes in a snapshot begun with {before}"
            );
        }
        snapshots += 1;
    }
    assert!(snapshots > 0);
    for (block, size) in keeper.join().unwrap() {
        free(block as *mut u8, size);
    }
}

#[inline(never)]
fn keep_one_block_of_the_first_size() -> usize {
    // SAFETY: a non-zero size with alignment 8.
    unsafe { alloc(Layout::from_size_align(KEPT[0], 8).unwrap()) as usize }
}

#[inline(never)]
fn keep_one_block_of_the_second_size() -> usize {
    // SAFETY: a non-zero size with alignment 8.
    unsafe { alloc(Layout::from_size_align(KEPT[1], 8).unwrap()) as usize }
}

/// A held block is counted at its site only when it leaves its thread's
/// slot (`record.rs`): freed there (a temporary, counted at once), moved
/// into the table by the next allocation, freed by another thread, or
/// reallocated. Until then its site's totals come from the slot. Each way
/// must count the block at its site once: in the totals, the live figures
/// and the temporaries, for a thread parked with a block held and after.
fn a_sites_figures_count_its_held_blocks_once_whichever_way_they_leave() {
    const TEMPORARIES: u64 = 100;
    static ADDRESS: AtomicUsize = AtomicUsize::new(0);
    static RELEASE: AtomicBool = AtomicBool::new(false);
    let worker = thread::spawn(|| {
        // A held block reallocated: its site counts it allocated and freed.
        // SAFETY: a non-zero size with alignment 8; the block is
        // reallocated once and the new one freed once.
        unsafe {
            let layout = Layout::from_size_align(REALLOCATED, 8).unwrap();
            let block = black_box(alloc(layout));
            let grown = std::alloc::realloc(block, layout, 2 * REALLOCATED);
            free(grown, 2 * REALLOCATED);
        }
        // Kept: the next allocation moves it into the table.
        let kept = allocate_counted();
        // Temporaries, then one more block from the same site, held while
        // this thread parks; the other thread frees it.
        for i in 0..=TEMPORARIES {
            let block = allocate_counted();
            if i == TEMPORARIES {
                ADDRESS.store(block, Ordering::Release);
            } else {
                free(block as *mut u8, COUNTED);
            }
        }
        while !RELEASE.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(1));
        }
        kept
    });
    // (total blocks, live blocks, temporary blocks) over the sites of
    // `COUNTED` blocks (one per call of `allocate_counted`).
    let counted = |snapshot: &Snapshot| -> (u64, u64, u64) {
        let mut figures = (0, 0, 0);
        for site in snapshot.sites().iter().filter(|site| {
            site.total_blocks() > 0 && site.total_bytes() == site.total_blocks() * COUNTED as u64
        }) {
            assert_eq!(site.live_bytes(), site.live_blocks() * COUNTED as u64);
            figures.0 += site.total_blocks();
            figures.1 += site.live_blocks();
            figures.2 += site.temporary_blocks();
        }
        figures
    };
    let blocks = TEMPORARIES + 2;
    let start = Instant::now();
    let held = loop {
        let held = ADDRESS.load(Ordering::Acquire);
        if held != 0 {
            break held;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no held block");
        thread::sleep(Duration::from_millis(1));
    };
    let parked = alloc_track::snapshot();
    assert_eq!(counted(&parked), (blocks, 2, TEMPORARIES), "parked");
    let reallocated = parked
        .sites()
        .iter()
        .find(|site| site.total_bytes() == REALLOCATED as u64)
        .map(|site| {
            (
                site.total_blocks(),
                site.live_blocks(),
                site.temporary_blocks(),
            )
        });
    assert_eq!(reallocated, Some((1, 0, 0)), "the reallocated block");
    // Freed by this thread while the worker holds it.
    free(held as *mut u8, COUNTED);
    assert_eq!(
        counted(&alloc_track::snapshot()),
        (blocks, 1, TEMPORARIES),
        "held, freed"
    );
    RELEASE.store(true, Ordering::Release);
    let kept = worker.join().unwrap();
    free(kept as *mut u8, COUNTED);
    assert_eq!(
        counted(&alloc_track::snapshot()),
        (blocks, 0, TEMPORARIES),
        "all freed"
    );
}

#[inline(never)]
fn allocate_counted() -> usize {
    // SAFETY: a non-zero size with alignment 8.
    unsafe { alloc(Layout::from_size_align(COUNTED, 8).unwrap()) as usize }
}
