//! Nesting past the 32 frames a thread's measure state holds: a logged
//! scope degrades (it is named but not measured, and its line says so),
//! `measure` panics with a message that names every API sharing the limit.

use std::alloc::System;

use alloc_track::{measure, scope, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

fn nest_logged_scopes(depth: usize, innermost: &dyn Fn()) {
    if depth == 0 {
        innermost();
        return;
    }
    let _scope = scope("nested").log();
    nest_logged_scopes(depth - 1, innermost);
}

#[test]
fn a_logged_scope_past_32_deep_does_not_panic() {
    // 32 measured, 8 more only named.
    nest_logged_scopes(40, &|| drop(std::hint::black_box(vec![0u8; 64])));
    // The frames all closed: a measure afterwards is exact.
    let (_, diff) = measure(|| std::hint::black_box(vec![0u8; 10]));
    assert_eq!(diff.total_bytes(), 10);
}

#[test]
fn measure_past_32_deep_names_what_shares_the_limit() {
    let panic = std::panic::catch_unwind(|| {
        nest_logged_scopes(32, &|| {
            let _ = measure(|| ());
        })
    })
    .expect_err("a 33rd frame cannot open");
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("measure, limits and scope(..).log() nest deeper than 32"),
        "{message}"
    );
    // Unwinding closed the 32 frames.
    let (_, diff) = measure(|| std::hint::black_box(vec![0u8; 10]));
    assert_eq!(diff.total_bytes(), 10);
}
