use super::*;

fn new_arena() -> Arena {
    Arena::new()
}

/// Takes a block and fills it with `fill`, checking that a block
/// said to be clean reads as zeros.
fn take(arena: &mut Arena, bytes: usize, fill: u8) -> usize {
    let (address, clean) = arena.take(order_of(bytes)).expect("memory");
    check(arena);
    assert!(
        !clean || holds(address, bytes, 0),
        "a clean block holds zeros"
    );
    assert_eq!(address % bytes, 0, "a block is aligned to its size");
    // SAFETY: the block is `bytes` of the arena's memory, this
    // test's alone.
    unsafe { ptr::write_bytes(address as *mut u8, fill, bytes) };
    address
}

/// The arena's counts agree with its chunks' entries.
fn check(arena: &mut Arena) {
    let mut blocks = [0; ORDERS];
    let (mut free, mut idle) = (0, 0);
    for chunk in arena.chunks().iter() {
        let mut in_chunk = [0; ORDERS];
        for &entry in &chunk.free {
            if let Some(order) = order_of_entry(entry) {
                in_chunk[usize::from(order)] += 1;
            }
        }
        assert_eq!(in_chunk, chunk.free_blocks);
        for &entry in &chunk.free {
            if let Some(order) = order_of_entry(entry) {
                blocks[usize::from(order)] += 1;
                free += MIN_BLOCK << order;
                if entry & RELEASED == 0 {
                    idle += MIN_BLOCK << order;
                }
            }
        }
    }
    assert_eq!(blocks, arena.free_blocks);
    assert_eq!((free, idle), (arena.free_bytes, arena.idle_bytes));
}

/// Whether the mapping holding `address` carries `MADV_HUGEPAGE`: "hg"
/// among its `VmFlags` in `/proc/self/smaps`.
fn advised_for_huge_pages(address: usize) -> bool {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let mut inside = false;
    for line in smaps.lines() {
        let range = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = range.split_once('-') {
            if let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                inside = (start..end).contains(&address);
                continue;
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().any(|flag| flag == "hg");
            }
        }
    }
    panic!("no mapping holds {address:#x}")
}

fn holds(address: usize, bytes: usize, fill: u8) -> bool {
    // SAFETY: as in `take`.
    let memory = unsafe { std::slice::from_raw_parts(address as *const u8, bytes) };
    memory.iter().all(|&b| b == fill)
}

#[test]
fn blocks_are_disjoint_and_merge_back_into_returned_chunks() {
    let mut arena = new_arena();
    let sizes = [PAGE, 4 * PAGE, 64 * 1024, 1 << 20, PAGE, 2 * PAGE, 1 << 20];
    let blocks: Vec<(usize, usize)> = (sizes.iter().enumerate())
        .map(|(i, &bytes)| (take(&mut arena, bytes, i as u8 + 1), bytes))
        .collect();
    for (i, &(address, bytes)) in blocks.iter().enumerate() {
        assert!(holds(address, bytes, i as u8 + 1), "block {i} overwritten");
    }
    // 2 MiB + 200 KiB asked for: two chunks, no more.
    assert_eq!(arena.len, 2);
    for &(address, bytes) in blocks.iter().rev() {
        arena.give_back(address, order_of(bytes));
        check(&mut arena);
    }
    // Free buddies merged into whole chunks, kept until a purge.
    assert_eq!(arena.free_blocks[usize::from(CHUNK_ORDER)], 2);
    assert_eq!((arena.free_bytes, arena.idle_bytes), (2 * CHUNK, 2 * CHUNK));
    arena.purge();
    assert_eq!(arena.len, 0, "a purge unmaps the free chunks");
    assert_eq!((arena.free_bytes, arena.idle_bytes), (0, 0));
}

#[test]
fn free_blocks_keep_their_pages_and_count_as_idle() {
    let mut arena = new_arena();
    let a = take(&mut arena, PAGE, 1);
    let b = take(&mut arena, PAGE, 2);
    // The first chunk is in small pages: its untouched ones are not
    // resident, so not idle.
    assert_eq!((arena.free_bytes, arena.idle_bytes), (CHUNK - 2 * PAGE, 0));
    arena.give_back(a, 0);
    assert_eq!(arena.idle_bytes, PAGE);
    // Kept, not given back: the page still holds its fill.
    assert!(holds(a, PAGE, 1));
    let c = take(&mut arena, PAGE, 3);
    assert_eq!(c, a, "the free page is used first");
    arena.give_back(b, 0);
    arena.give_back(c, 0);
    // A wholly free chunk stays mapped, below the purge floor (counted
    // idle whole: merged with a used block, it is not known which of its
    // pages were touched).
    assert_eq!((arena.len, arena.idle_bytes), (1, CHUNK));
    let d = take(&mut arena, PAGE, 4);
    assert_eq!(d, a);
    arena.give_back(d, 0);
    check(&mut arena);
}

#[test]
fn idle_blocks_give_their_pages_back_past_the_purge_floor() {
    let mut arena = new_arena();
    let blocks: Vec<usize> = (0..20)
        .map(|i| take(&mut arena, 1 << 20, i as u8 + 1))
        .collect();
    assert_eq!(arena.len, 10);
    // One block of each chunk back: the chunks stay, half free.
    let freed: Vec<usize> = blocks.iter().copied().step_by(2).collect();
    let mut kept = 0;
    for &address in &freed {
        arena.give_back(address, order_of(1 << 20));
        kept += 1 << 20;
        if kept > PURGE_FLOOR {
            kept = 0; // purged, every free block of them
        }
        assert_eq!(arena.idle_bytes, kept);
        check(&mut arena);
    }
    assert_eq!(arena.free_bytes, 10 << 20);
    let purged = PURGE_FLOOR / (1 << 20) + 1;
    for &address in &freed[..purged] {
        assert!(holds(address, 1 << 20, 0), "given back: zero");
    }
    for &address in &freed[purged..] {
        assert!(!holds(address, 1 << 20, 0), "not given back yet");
    }
    // Taken again, split and merged, the released blocks work.
    let again = take(&mut arena, 1 << 19, 7);
    assert!(freed.contains(&(again & !((1 << 20) - 1))));
    arena.give_back(again, order_of(1 << 19));
    for &address in blocks.iter().skip(1).step_by(2) {
        arena.give_back(address, order_of(1 << 20));
        check(&mut arena);
    }
    arena.purge();
    assert_eq!(arena.len, 0);
}

#[test]
fn the_chunk_array_grows_past_one_page() {
    let mut arena = new_arena();
    let count = PAGE / size_of::<Chunk>() + 2;
    let blocks: Vec<usize> = (0..count)
        .map(|i| take(&mut arena, 1 << 20, i as u8))
        .collect();
    // Two megabyte blocks to a chunk.
    assert_eq!(arena.len, count.div_ceil(2));
    for (i, &address) in blocks.iter().enumerate() {
        assert!(holds(address, 1 << 20, i as u8));
        arena.give_back(address, order_of(1 << 20));
    }
    arena.purge();
    assert_eq!(arena.len, 0);
}

#[test]
fn chunks_after_the_first_are_advised_and_idle_once_mapped() {
    let mut arena = new_arena();
    let first = take(&mut arena, 1 << 20, 1);
    let second = take(&mut arena, 1 << 20, 2);
    assert_eq!((arena.len, arena.idle_bytes), (1, 0));
    // The second chunk: huge pages, whose first touch brings in all of it.
    let third = take(&mut arena, 1 << 20, 3);
    assert_eq!((arena.len, arena.idle_bytes), (2, 1 << 20));
    // (A kernel built without transparent huge pages refuses the advice.)
    if std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
        assert!(!advised_for_huge_pages(first));
        assert!(advised_for_huge_pages(third));
    }
    for (address, fill) in [(first, 1), (second, 2), (third, 3)] {
        assert!(holds(address, 1 << 20, fill));
        arena.give_back(address, order_of(1 << 20));
        check(&mut arena);
    }
    arena.purge();
    assert_eq!(arena.len, 0);
}
