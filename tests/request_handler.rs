//! A request handler that allocates per item where one buffer would do,
//! and the `measure`-based tests that catch it: the per-item version makes
//! 1,005 allocations for a 500-item request (two per item: `format!`
//! starts with no capacity for these lines and grows once, and a realloc
//! counts as an allocation), the buffered one 4. Such
//! tests are exact under parallel `cargo test`, because only the calling
//! thread's allocations count.
//!
//! ```text
//! cargo test --test request_handler -- --nocapture
//! ```

use std::alloc::System;
use std::io::Write;

#[global_allocator]
static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);

const ITEMS: usize = 500;

struct Item {
    id: u32,
    name: &'static str,
    price_cents: u32,
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn request() -> Vec<Item> {
    (0..ITEMS as u32)
        .map(|id| Item {
            id,
            name: ["apple", "pear", "plum"][id as usize % 3],
            price_cents: 100 + id,
        })
        .collect()
}

/// One `String` per item, collected, then concatenated: `2 * ITEMS + 5`
/// (each `format!` allocates 8 bytes, then grows to fit the line).
#[inline(never)]
fn handle_per_item(items: &[Item]) -> Response {
    let lines: Vec<String> = items
        .iter()
        .map(|item| format!("{},{},{}\n", item.id, item.name, item.price_cents))
        .collect();
    let body = lines.concat().into_bytes();
    Response {
        status: 200,
        headers: vec![
            ("content-type", "text/csv".to_string()),
            ("content-length", body.len().to_string()),
        ],
        body,
    }
}

/// Every line written into one buffer sized up front: 4 allocations (the
/// buffer, the header list and its two values), whatever the item count.
#[inline(never)]
fn handle_one_buffer(items: &[Item]) -> Response {
    // The longest line here ("499,apple,599\n") is 14 bytes: 24 per item
    // leaves room, so the buffer never grows.
    let mut body = Vec::with_capacity(items.len() * 24);
    for item in items {
        // Writing into a Vec with room to spare never allocates.
        let _ = writeln!(body, "{},{},{}", item.id, item.name, item.price_cents);
    }
    Response {
        status: 200,
        headers: vec![
            ("content-type", "text/csv".to_string()),
            ("content-length", body.len().to_string()),
        ],
        body,
    }
}

#[test]
fn per_item_allocation_costs_one_allocation_per_item() {
    let items = request();
    let (response, diff) = alloc_track::measure(|| handle_per_item(&items));
    println!("per item:\n{diff}");
    assert_eq!(response.status, 200);
    assert_eq!(diff.total_blocks(), 2 * ITEMS as u64 + 5, "{diff}");
    // What the response keeps: body, header list, two header values.
    assert_eq!(diff.retained_blocks(), 4, "{diff}");
}

#[test]
fn one_buffer_costs_four_allocations_for_any_size() {
    let items = request();
    let (response, diff) = alloc_track::measure(|| handle_one_buffer(&items));
    println!("one buffer:\n{diff}");
    assert_eq!(diff.total_blocks(), 4, "{diff}");
    assert_eq!(response.body, handle_per_item(&items).body);
    assert_eq!(response.headers[1].1, response.body.len().to_string());

    // The same four for a request ten times smaller.
    let (_, small) = alloc_track::measure(|| handle_one_buffer(&items[..50]));
    assert_eq!(small.total_blocks(), 4, "{small}");
}

#[test]
fn a_limit_catches_the_regression_and_names_the_site() {
    let items = request();
    // The buffered handler passes...
    let response = alloc_track::limits()
        .max_blocks(4)
        .check(|| handle_one_buffer(&items));
    assert_eq!(response.status, 200);

    // ...the per-item one fails, with the table that says where.
    let failure = std::panic::catch_unwind(|| {
        alloc_track::limits()
            .max_blocks(4)
            .check(|| handle_per_item(&items))
    })
    .expect_err("1,005 allocations exceed a limit of 4");
    let message = failure
        .downcast_ref::<String>()
        .expect("a formatted message");
    println!("{message}");
    assert!(message.contains("allocations: 1,005, limit 4"), "{message}");
    assert!(message.contains("handle_per_item"), "{message}");
}
