//! A worker that runs for a while, dumping its heap every 2,000 tasks the
//! way a service does with `ALLOC_TRACK_INTERVAL`. One task type leaks: it
//! remembers every session in a cache nothing evicts. The others do not:
//! a template table is loaded once, on the first render; each batch keeps
//! a scratch buffer whose size comes and goes.
//!
//! `alloc-track trend` over the numbered dumps names the leak first and
//! tells it apart from the one-off growth and the churn:
//!
//! ```text
//! cargo run --release --example worker_trend
//! cargo run --release -p alloc-track-cli -- trend worker_trend.*.json
//! ```
//!
//! Pass a directory as the first argument to write the dumps there. The
//! same series comes from any unmodified binary with
//! `ALLOC_TRACK_DUMP=worker.json ALLOC_TRACK_INTERVAL=60`.

use std::alloc::System;
use std::collections::HashMap;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);

/// How many dumps the run writes, one every `TASKS_PER_DUMP` tasks.
const DUMPS: u64 = 8;
const TASKS_PER_DUMP: u64 = 2_000;

enum Task {
    /// Log a user in: the leak. Each session is remembered forever.
    Login(u64),
    /// Render a page from the template table, loaded on first use.
    Render(u64),
    /// Crunch a batch of numbers: a scratch buffer freed at the end.
    Crunch(u64),
}

#[derive(Default)]
struct Worker {
    /// The leak: never evicted, one entry per login ever seen.
    sessions: HashMap<u64, Session>,
    /// Loaded on the first render, then constant: grows once.
    templates: Option<Vec<String>>,
    /// Reused between tasks, resized to each batch: comes and goes.
    scratch: Vec<u64>,
}

#[allow(dead_code)] // held, never read: what a session cache looks like
struct Session {
    user: u64,
    token: String,
    history: Vec<u8>,
}

impl Worker {
    fn handle(&mut self, task: Task) -> usize {
        match task {
            Task::Login(user) => self.login(user),
            Task::Render(page) => self.render(page).len(),
            Task::Crunch(n) => self.crunch(n),
        }
    }

    #[inline(never)]
    fn login(&mut self, user: u64) -> usize {
        let session = new_session(user);
        let len = session.history.len();
        self.sessions.insert(user, session);
        len
    }

    #[inline(never)]
    fn render(&mut self, page: u64) -> String {
        let templates = self.templates.get_or_insert_with(load_templates);
        let template = &templates[(page % templates.len() as u64) as usize];
        format!("{template} #{page}")
    }

    #[inline(never)]
    fn crunch(&mut self, n: u64) -> usize {
        // A batch between 1 and 64 Ki numbers; the buffer keeps its
        // capacity until a smaller batch shrinks it.
        let size = 1 + (n.wrapping_mul(2_654_435_761) % 65_536) as usize;
        self.scratch.clear();
        self.scratch.extend(0..size as u64);
        if self.scratch.capacity() > 2 * size {
            self.scratch.shrink_to_fit();
        }
        self.scratch.iter().filter(|&&x| x % 7 == 0).count()
    }
}

#[inline(never)]
fn new_session(user: u64) -> Session {
    Session {
        user,
        token: format!("token-{user:016x}"),
        history: vec![0; 512],
    }
}

#[inline(never)]
fn load_templates() -> Vec<String> {
    (0..200)
        .map(|i| {
            format!(
                "<html><body>template {i}: {}</body></html>",
                "x".repeat(4000)
            )
        })
        .collect()
}

fn task(n: u64) -> Task {
    match n % 4 {
        0 => Task::Login(n),
        // Pages are rendered only from the second batch on: the template
        // table appears after the first dump.
        1 if n >= TASKS_PER_DUMP => Task::Render(n),
        _ => Task::Crunch(n),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_default();
    let series = out_dir.join("worker_trend.json");
    let mut worker = Worker::default();
    let mut n = 0;
    for dump in 1..=DUMPS {
        for _ in 0..TASKS_PER_DUMP {
            worker.handle(task(n));
            n += 1;
        }
        let path = alloc_track::numbered_path(&series, dump);
        alloc_track::dump(&path)?;
        println!(
            "after {n:>6} tasks: {} live; dump {}",
            alloc_track::human::Bytes(alloc_track::snapshot().live_bytes()),
            path.display()
        );
    }
    println!(
        "\nNow: alloc-track trend {}",
        out_dir.join("worker_trend.*.json").display()
    );
    Ok(())
}
