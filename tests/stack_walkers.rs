//! Every stack walker gives the same stacks. Run in a build with frame
//! pointers (`RUSTFLAGS="-C force-frame-pointers=yes"`, as CI's second
//! pass does), the default walker is the frame-pointer walk; without them,
//! on Linux x86_64 with glibc, the cached CFI walker. The same test binary
//! run with `ALLOC_TRACK_UNWIND=unwinder` uses the unwinder, and with
//! `ALLOC_TRACK_UNWIND=cfi` the CFI walker in any build. The resolved,
//! trimmed frames of one allocation site, on the main thread and on a
//! spawned one, must be identical. `ALLOC_TRACK_EXPECT_WALKER=FramePointers`
//! makes the test also insist that the default walker is the frame-pointer
//! walk.

use std::alloc::System;
use std::hint::black_box;
use std::process::Command;

use alloc_track::{snapshot, Tracker, Walker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

#[inline(never)]
fn leaf_allocation() -> Vec<u8> {
    black_box(vec![7u8; 777])
}

#[inline(never)]
fn middle() -> Vec<u8> {
    black_box(leaf_allocation())
}

/// The frames (function names) of the site that allocated `middle`'s block.
fn frames_of_the_site() -> Vec<String> {
    let before = snapshot();
    let block = middle();
    let diff = snapshot().diff(&before);
    let site = diff
        .sites()
        .iter()
        .find(|s| s.retained_bytes() == 777)
        .expect("the 777-byte block's site");
    drop(block);
    site.stack()
        .frames()
        .into_iter()
        .map(|f| f.function)
        .collect()
}

#[test]
fn the_frame_pointer_walk_and_the_unwinder_agree() {
    if std::env::var_os("STACK_WALKERS_CHILD").is_some() {
        for frame in frames_of_the_site() {
            println!("frame={frame}");
        }
        // A spawned thread's stack ends elsewhere (glibc's `clone3`), and
        // the walkers must find that end too.
        for frame in std::thread::spawn(frames_of_the_site).join().unwrap() {
            println!("thread_frame={frame}");
        }
        // Settled by the captures above.
        println!("walker={:?}", alloc_track::stack_walker());
        return;
    }
    let run = |unwind: Option<&str>| {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                "the_frame_pointer_walk_and_the_unwinder_agree",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("STACK_WALKERS_CHILD", "1");
        match unwind {
            Some(value) => command.env("ALLOC_TRACK_UNWIND", value),
            None => command.env_remove("ALLOC_TRACK_UNWIND"),
        };
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        // libtest prints the test's name on the line the first output
        // continues.
        let walker = stdout
            .lines()
            .find_map(|l| l.split_once("walker="))
            .unwrap()
            .1
            .to_string();
        let frames = |prefix: &str| -> Vec<String> {
            stdout
                .lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .map(String::from)
                .collect()
        };
        (walker, frames("frame="), frames("thread_frame="))
    };
    let (default_walker, default_frames, default_thread) = run(None);
    let (unwinder, unwound_frames, unwound_thread) = run(Some("unwinder"));
    assert_eq!(unwinder, format!("{:?}", Walker::Unwinder));
    assert_eq!(
        default_thread, unwound_thread,
        "on a spawned thread, the {default_walker} walk and the unwinder disagree"
    );
    // The CFI walker, forced even in a build with frame pointers, where it
    // would otherwise never run.
    if cfg!(all(
        target_os = "linux",
        target_env = "gnu",
        target_arch = "x86_64"
    )) {
        let (cfi, cfi_frames, cfi_thread) = run(Some("cfi"));
        assert_eq!(
            cfi,
            format!("{:?}", Walker::Cfi),
            "the CFI walker was not used"
        );
        assert_eq!(
            cfi_frames, unwound_frames,
            "the CFI walk and the unwinder disagree"
        );
        assert_eq!(
            cfi_thread, unwound_thread,
            "on a spawned thread, the CFI walk and the unwinder disagree"
        );
        // Without frame pointers, the CFI walker is the default.
        if default_walker != format!("{:?}", Walker::FramePointers) {
            assert_eq!(default_walker, format!("{:?}", Walker::Cfi));
        }
    }
    // CI's frame-pointer pass says which walker it expects, so that a walk
    // silently distrusted (and replaced by the unwinder) fails the test.
    if let Ok(expected) = std::env::var("ALLOC_TRACK_EXPECT_WALKER") {
        assert_eq!(default_walker, expected);
    }
    // Whichever walker the build got, the stack starts in the allocating
    // code and passes through its callers.
    for frames in [&default_frames, &unwound_frames, &default_thread] {
        let leaf = frames
            .iter()
            .position(|f| f.contains("leaf_allocation"))
            .expect("leaf frame");
        let caller = frames
            .iter()
            .position(|f| f.contains("stack_walkers::middle"))
            .expect("caller frame");
        assert!(leaf < caller, "{frames:#?}");
    }
    assert_eq!(
        default_frames, unwound_frames,
        "the {default_walker} walk and the unwinder disagree"
    );
}

#[inline(never)]
fn repeated_allocation() -> Box<[u8; 333]> {
    black_box(Box::new([3u8; 333]))
}

/// The walkers are checked against the unwinder every 8,192nd capture of a
/// thread; those captures must give the same stack as the others, or the
/// one call site splits into two sites (and the checked stack shows the
/// tracker's own frames).
#[test]
fn one_call_site_is_one_site_across_the_periodic_checks() {
    const BLOCKS: usize = 20_000;
    let before = snapshot();
    let kept: Vec<Box<[u8; 333]>> = (0..BLOCKS).map(|_| repeated_allocation()).collect();
    let diff = snapshot().diff(&before);
    let sites: Vec<_> = diff
        .sites()
        .iter()
        .filter(|s| {
            s.stack()
                .frames()
                .iter()
                .any(|f| f.function.contains("repeated_allocation"))
        })
        .collect();
    drop(kept);
    assert_eq!(sites.len(), 1, "one call site recorded as several sites");
    assert_eq!(sites[0].retained_blocks(), BLOCKS as u64);
}

/// One frame per level, and no tail call: the block is used after the
/// recursive call returns.
#[inline(never)]
fn deep(depth: u32) -> Box<[u8; 48]> {
    if depth == 0 {
        return black_box(Box::new([5u8; 48]));
    }
    let block = deep(black_box(depth - 1));
    black_box(&block);
    block
}

/// Stacks deeper than the capture limit: the walk, checked against the
/// unwinder every 8,192nd capture, starts a frame or two deeper inside the
/// check and so fills up a frame or two sooner. That must not count as a
/// disagreement (the fast walker would be turned off for good), nor make
/// the checked capture a site of its own.
#[test]
fn stacks_deeper_than_the_limit_keep_the_fast_walker_and_one_site() {
    const BLOCKS: usize = 20_000;
    let before = snapshot();
    let kept: Vec<Box<[u8; 48]>> = (0..BLOCKS).map(|_| deep(200)).collect();
    let diff = snapshot().diff(&before);
    let sites: Vec<_> = diff
        .sites()
        .iter()
        .filter(|s| s.retained_bytes() > 0 && s.retained_bytes() % 48 == 0)
        .filter(|s| {
            s.stack()
                .frames()
                .iter()
                .any(|f| f.function.contains("stack_walkers::deep"))
        })
        .collect();
    drop(kept);
    assert_eq!(sites.len(), 1, "one call site recorded as several sites");
    assert_eq!(sites[0].retained_blocks(), BLOCKS as u64);
    if std::env::var_os("ALLOC_TRACK_UNWIND").is_none()
        && cfg!(all(
            target_os = "linux",
            target_env = "gnu",
            target_arch = "x86_64"
        ))
    {
        assert_ne!(
            alloc_track::stack_walker(),
            Walker::Unwinder,
            "a deep stack turned the fast walker off"
        );
    }
}
