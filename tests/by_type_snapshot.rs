//! `Snapshot::by_type` in this workspace's own build (legacy symbol
//! mangling, unless RUSTFLAGS asks for v0): `String` is told exactly, a
//! `Box` is told as a `Box` allocated in the function that made it, and
//! each type lists the sites that allocated it.

// Boxes kept in a vector on purpose: each box is one block.
#![allow(clippy::vec_box)]

mod common;

use std::alloc::System;
use std::hint::black_box;

use alloc_track::types::Container;
use alloc_track::Tracker;
use common::passes_through;

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

#[inline(never)]
fn hold_strings_and_boxes() -> (Vec<String>, Vec<Box<[u8; 32]>>) {
    let mut strings = Vec::with_capacity(4);
    for _ in 0..4 {
        let mut name = String::with_capacity(16);
        name.push_str("session");
        strings.push(name);
    }
    let mut boxes = Vec::with_capacity(3);
    for i in 0..3 {
        boxes.push(Box::new([i as u8; 32]));
    }
    (strings, boxes)
}

#[test]
fn by_type_tells_strings_and_boxes_with_their_sites() {
    let held = black_box(hold_strings_and_boxes());
    let snapshot = alloc_track::snapshot();
    let types = snapshot.by_type();
    // Live blocks of a type allocated by the function above.
    let held_of = |container: Container| -> (u64, Vec<&alloc_track::types::TypeStats>) {
        let rows: Vec<_> = types
            .iter()
            .filter(|t| t.allocated_type.container == Some(container))
            .collect();
        let blocks = rows
            .iter()
            .flat_map(|t| t.sites.iter())
            .map(|&row| &snapshot.sites()[row])
            .filter(|site| passes_through(&site.stack(), "hold_strings_and_boxes"))
            .map(|site| site.live_blocks())
            .sum();
        (blocks, rows)
    };
    let (strings, _) = held_of(Container::String);
    assert_eq!(strings, 4);
    let (boxes, rows) = held_of(Container::Box);
    assert_eq!(boxes, 3);
    let boxed = rows
        .iter()
        .find(|t| {
            t.allocated_type
                .allocated_in
                .as_deref()
                .is_some_and(|f| f.contains("hold_strings_and_boxes"))
        })
        .expect("a Box row allocated in hold_strings_and_boxes");
    // Legacy names erase the element; a v0 build names it.
    assert!(
        matches!(
            boxed.allocated_type.element.as_deref(),
            None | Some("[u8; 32]")
        ),
        "{:?}",
        boxed.allocated_type
    );
    // The biggest types come first.
    assert!(types.windows(2).all(|w| w[0].live_bytes >= w[1].live_bytes));
    drop(held);
}
