use super::build::eh_frame_address;
use super::*;

#[test]
fn eh_frame_ptr_decodes_in_each_encoding() {
    let hdr = |encoding: u8, field: &[u8]| [&[1, encoding, 0x03, 0x3b][..], field].concat();
    // pcrel | sdata4, the usual one: relative to the field (hdr + 4).
    let back = (-0x100i32).to_le_bytes();
    assert_eq!(
        eh_frame_address(&hdr(0x1b, &back), 0x1000),
        Some(0x1004 - 0x100)
    );
    let ahead = 0x20i32.to_le_bytes();
    assert_eq!(eh_frame_address(&hdr(0x1b, &ahead), 0x1000), Some(0x1024));
    // datarel | udata4: relative to the header's start.
    assert_eq!(
        eh_frame_address(&hdr(0x33, &0x40u32.to_le_bytes()), 0x1000),
        Some(0x1040)
    );
    // absptr: the address itself.
    assert_eq!(
        eh_frame_address(&hdr(0x00, &0xdead_beefu64.to_le_bytes()), 0x1000),
        Some(0xdead_beef)
    );
    // pcrel | sdata8.
    assert_eq!(
        eh_frame_address(&hdr(0x1c, &(-8i64).to_le_bytes()), 0x1000),
        Some(0x1004 - 8)
    );
}

#[test]
fn eh_frame_ptr_refuses_what_it_cannot_decode() {
    let field = 0x20i32.to_le_bytes();
    // Omitted, indirect, LEB128, an unknown version, a short field.
    assert_eq!(
        eh_frame_address(&[1, 0xff, 3, 0x3b, 0, 0, 0, 0], 0x1000),
        None
    );
    assert_eq!(
        eh_frame_address(&[&[1, 0x9b, 3, 0x3b][..], &field].concat(), 0),
        None
    );
    assert_eq!(eh_frame_address(&[1, 0x11, 3, 0x3b, 0x20], 0x1000), None);
    assert_eq!(
        eh_frame_address(&[&[2, 0x1b, 3, 0x3b][..], &field].concat(), 0),
        None
    );
    assert_eq!(eh_frame_address(&[1, 0x1b, 3, 0x3b, 0x20, 0], 0x1000), None);
    assert_eq!(eh_frame_address(&[1, 0x1b], 0x1000), None);
}

fn stack(frames: &[usize], truncated: bool) -> CapturedStack {
    let mut stack = CapturedStack::new();
    for &ip in frames {
        stack.push(ip);
    }
    stack.truncated = truncated;
    stack
}

#[test]
fn agreement_means_the_same_frames_from_the_unwinders_first() {
    let unwound = stack(&[1, 2, 3, 4], false);
    // The walk starts a frame or two deeper, inside the check.
    assert!(agree(&stack(&[90, 91, 1, 2, 3, 4], false), &unwound).is_some());
    assert!(agree(&stack(&[1, 2, 3, 4], false), &unwound).is_some());
    // A frame missing, an extra root frame, a wrong frame: all disagree.
    assert!(agree(&stack(&[90, 1, 3, 4], false), &unwound).is_none());
    assert!(agree(&stack(&[90, 1, 2, 3, 4, 5], false), &unwound).is_none());
    assert!(agree(&stack(&[90, 1, 2, 9, 4], false), &unwound).is_none());
    // Stopped early while the unwinder went on.
    assert!(agree(&stack(&[90, 1, 2, 3], false), &unwound).is_none());
    // Never reaches the unwinder's first frame.
    assert!(agree(&stack(&[90, 91, 92, 93, 1, 2, 3, 4], false), &unwound).is_none());
    // The unwinder's stack filled up first: the walk may run on past it.
    let full = stack(&[1, 2, 3], true);
    assert!(agree(&stack(&[90, 1, 2, 3, 4, 5], true), &full).is_some());
    // Both filled up: the walk, starting deeper, holds fewer of the
    // unwinder's frames, and agrees on those.
    let deep = stack(&[1, 2, 3, 4], true);
    assert_eq!(agree(&stack(&[90, 91, 1, 2], true), &deep), None); // 2 < 3 frames
    assert_eq!(agree(&stack(&[90, 1, 2, 3], true), &deep), Some(1));
    assert_eq!(agree(&stack(&[90, 1, 2, 9], true), &deep), None);
    // The walk filled up while the unwinder reached the root further on.
    assert_eq!(agree(&stack(&[90, 1, 2, 3], true), &unwound), Some(1));
    assert_eq!(agree(&stack(&[90, 1, 2, 3, 4], true), &unwound), Some(1));
    // Too short to tell.
    assert!(agree(&stack(&[90, 3, 4], false), &stack(&[3, 4], false)).is_none());
}

/// Walks and unwinds from the same frame, a few calls down, on this
/// thread. Outside a capture the unwinder keeps its own frames, so the
/// walk's stack must be the tail of the unwinder's from the walk's first
/// frame on.
#[inline(never)]
fn walk_and_unwind_from_a_callee(cache: *mut Cache) -> (Option<bool>, usize) {
    first_modules();
    let mut walked = CapturedStack::new();
    let walked_ok = walk(registers(), cache, &mut walked);
    let mut unwound = CapturedStack::new();
    unwind(&mut unwound);
    let agrees = walked_ok.then(|| {
        let start = walked
            .frames()
            .first()
            .and_then(|first| unwound.frames().iter().position(|ip| ip == first));
        start
            .is_some_and(|start| unwound.frames()[start..] == *walked.frames() && walked.len() >= 3)
    });
    (agrees, unwound.len())
}

fn compare_with_a_cache() -> (Option<bool>, usize) {
    let cache = Box::into_raw(Box::new(Cache::new(Cache::FULL_RULES)));
    THREAD_CFI.with(|thread| thread.cache.set(cache));
    let outcome = std::hint::black_box(walk_and_unwind_from_a_callee(cache));
    release_thread();
    assert!(THREAD_CFI.with(|thread| thread.cache.get().is_null()));
    outcome
}

// Miri cannot run inline assembly or `dl_iterate_phdr`.
#[test]
#[cfg_attr(miri, ignore)]
fn the_walk_gives_the_unwinders_frames() {
    let (agrees, frames) = compare_with_a_cache();
    assert_eq!(agrees, Some(true), "{frames} frames unwound");
    // Every code address of this test binary is in a known module.
    // SAFETY: a non-null list is leaked, never freed.
    let modules = unsafe { MODULES.load(Ordering::Acquire).as_ref() }.expect("a module list");
    assert!(modules.knows(compare_with_a_cache as *const () as u64));
    assert!(!modules.knows(0));
}

#[test]
#[cfg_attr(miri, ignore)]
fn the_walk_gives_the_unwinders_frames_on_a_spawned_thread() {
    let (agrees, frames) = std::thread::spawn(compare_with_a_cache).join().unwrap();
    assert_eq!(agrees, Some(true), "{frames} frames unwound");
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_rebuilt_list_reuses_the_copies() {
    first_modules();
    // SAFETY: as above.
    let first = unsafe { MODULES.load(Ordering::Acquire).as_ref() }.expect("a module list");
    let again = build::build_modules(Some(first)).expect("a module list");
    assert_eq!(again.copies.len(), first.copies.len());
    for (a, b) in again.copies.iter().zip(&first.copies) {
        assert_eq!(a.eh_frame.as_ptr(), b.eh_frame.as_ptr());
    }
    assert_eq!(Some(again.loads), loader_counts());
    // Nothing went away: the rules derived under the first list still
    // hold, and the threads' caches keep them.
    assert_eq!(again.generation, first.generation);
}

#[test]
#[cfg_attr(miri, ignore)]
fn a_list_that_lost_an_object_starts_a_new_generation() {
    first_modules();
    // SAFETY: as above.
    let current = unsafe { MODULES.load(Ordering::Acquire).as_ref() }.expect("a module list");
    // A list that knew one more object than the loader has now.
    static GONE: [u8; 8] = [1, 0x1b, 3, 0x3b, 0, 0, 0, 0];
    let mut older = build::build_modules(None).expect("a module list");
    older.code.push(0x10..0x20);
    older.copies.push(Copied {
        hdr_address: 0x10,
        hdr: &GONE,
        eh_frame_address: 0x10,
        eh_frame: &GONE,
    });
    let rebuilt = build::build_modules(Some(&older)).expect("a module list");
    assert_ne!(rebuilt.generation, older.generation);
    // The same list without the lost object keeps its generation.
    let again = build::build_modules(Some(current)).expect("a module list");
    assert_eq!(again.generation, current.generation);
}
