//! Prints which stack walker the tracker uses in this build, and one
//! captured stack: a quick check that a build keeps frame pointers.
//!
//! ```text
//! RUSTFLAGS="-C force-frame-pointers=yes" cargo run --release --example which_walker
//! ```

use std::alloc::System;

#[global_allocator]
static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);

#[inline(never)]
fn allocate_here() -> Vec<u8> {
    vec![1; 1000]
}

fn main() {
    let before = alloc_track::snapshot();
    let block = std::hint::black_box(allocate_here());
    let diff = alloc_track::snapshot().diff(&before);
    println!("stack walker: {:?}", alloc_track::stack_walker());
    if let Some(site) = diff.sites().iter().find(|s| s.retained_bytes() == 1000) {
        for frame in site.stack().frames() {
            println!("  {}", frame.label(None));
        }
    }
    drop(block);
}
