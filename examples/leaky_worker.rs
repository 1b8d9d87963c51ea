//! A worker that handles a stream of tasks, one kind of which leaks: it
//! keeps every result in a cache that nothing ever evicts. Memory climbs
//! with every task and never comes down.
//!
//! The snapshot diff taken after the warm-up names the leaking function at
//! the top of its table, with the retained bytes to prove it. Both
//! snapshots are saved as dumps for the CLI:
//!
//! ```text
//! cargo run --release --example leaky_worker
//! cargo run --release -p alloc-track-cli -- report leaky_worker.after.json
//! cargo run --release -p alloc-track-cli -- diff leaky_worker.before.json leaky_worker.after.json
//! ```
//!
//! Pass a directory as the first argument to write the dumps there.

use std::alloc::System;
use std::collections::HashMap;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);

/// What the worker is asked to do.
enum Task {
    /// Parse a record and summarise it: allocates, frees everything.
    Parse(String),
    /// Render a report line: allocates, frees everything.
    Render(u64),
    /// Look a user up, caching the answer: the cache never evicts.
    Lookup(u64),
}

struct Worker {
    /// The leak: one entry per distinct user ever looked up.
    profile_cache: HashMap<u64, Vec<u8>>,
}

impl Worker {
    fn handle(&mut self, task: Task) -> usize {
        match task {
            Task::Parse(line) => parse_record(&line),
            Task::Render(id) => render_line(id).len(),
            Task::Lookup(user) => self.lookup_profile(user),
        }
    }

    #[inline(never)]
    fn lookup_profile(&mut self, user: u64) -> usize {
        self.profile_cache
            .entry(user)
            .or_insert_with(|| load_profile(user))
            .len()
    }
}

#[inline(never)]
fn load_profile(user: u64) -> Vec<u8> {
    // A 2 KiB profile per user, kept forever by the cache.
    let mut profile = vec![0u8; 2048];
    profile[..8].copy_from_slice(&user.to_le_bytes());
    profile
}

#[inline(never)]
fn parse_record(line: &str) -> usize {
    let fields: Vec<String> = line.split(',').map(str::to_owned).collect();
    fields.iter().map(String::len).sum()
}

#[inline(never)]
fn render_line(id: u64) -> String {
    format!("report line {id:>10}: {}", "#".repeat((id % 40) as usize))
}

fn task(n: u64) -> Task {
    match n % 3 {
        0 => Task::Parse(format!("{n},alice,{},ok", n * 7)),
        1 => Task::Render(n),
        _ => Task::Lookup(n),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut worker = Worker {
        profile_cache: HashMap::new(),
    };

    // Warm up, then watch the next batches the way a worker's main loop
    // logs memory per batch.
    for n in 0..1_000 {
        worker.handle(task(n));
    }
    let before = alloc_track::snapshot();
    let mut n = 1_000;
    for batch in 1..=5 {
        for _ in 0..3_000 {
            worker.handle(task(n));
            n += 1;
        }
        let now = alloc_track::snapshot();
        println!(
            "after batch {batch}: {} live in {} blocks",
            alloc_track::human::Bytes(now.live_bytes()),
            alloc_track::human::Count(now.live_blocks()),
        );
    }
    let after = alloc_track::snapshot();

    println!("\nWhat grew since the warm-up:\n{}", after.diff(&before));

    let before_path = out_dir.join("leaky_worker.before.json");
    let after_path = out_dir.join("leaky_worker.after.json");
    before.save(&before_path)?;
    after.save(&after_path)?;
    println!(
        "Dumps written: {} and {}",
        before_path.display(),
        after_path.display()
    );
    Ok(())
}
