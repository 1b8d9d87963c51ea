//! # alloc-track: what is alive on your heap, and who allocated it
//!
//! `alloc-track` is a heap profiler for Rust programs. It wraps the global
//! allocator, records every live allocation with the call stack that made
//! it, and answers the questions a growing process raises: *what is alive
//! on the heap now, where was it allocated, what grew between two moments,
//! and what was the peak made of.* The `alloc-track` command line (package
//! `alloc-track-cli`) turns its dumps into reports, flamegraphs, diffs,
//! trends and files that pprof and DHAT's viewer open.
//!
//! This page is the manual. Longer documents live beside the crate's
//! source, under `alloc-track/docs/`: `cli.md` (every command with real
//! output), `stories.md` (a leaking worker, a report job's peak, a request
//! handler), `heap-vs-rss.md`, `performance.md` (and its history,
//! `performance-history.md`), `guarantees.md`, `dump-format.md`,
//! `how-it-works.md` and `testing.md`.
//!
//! # Setup: two lines
//!
//! ```toml
//! # Cargo.toml
//! [dependencies]
//! alloc-track = { path = "alloc-track" }   # not yet on crates.io
//!
//! # Function names and lines come from debug info: keep some in the profile
//! # you measure ("limited" is enough; "line-tables-only" loses module paths
//! # of inlined functions).
//! [profile.release]
//! debug = "limited"
//! ```
//!
//! ```
//! use std::alloc::System;
//!
//! #[global_allocator]
//! static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
//! # fn main() {}
//! ```
//!
//! [`Tracker`] wraps any [`GlobalAlloc`](std::alloc::GlobalAlloc) (System,
//! jemalloc, mimalloc). From the first allocation on, every block is
//! recorded with the stack that allocated it; nothing else changes in the
//! program. Install it in the binary, or in each integration-test file
//! that measures (one test file is one binary).
//!
//! If the tracker is not installed as the global allocator,
//! [`snapshot`](fn@snapshot) and [`measure`](fn@measure) panic with a
//! message saying so rather than return silently empty figures;
//! [`is_installed`] asks first.
//!
//! # What is alive, and what changed
//!
//! ```
//! # use std::alloc::System;
//! # #[global_allocator]
//! # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
//! fn load_cache() -> Vec<String> {
//!     (0..1000).map(|i| format!("entry {i}")).collect()
//! }
//!
//! fn main() {
//!     let before = alloc_track::snapshot();
//!     let cache = load_cache();
//!     let after = alloc_track::snapshot();
//!
//!     let diff = after.diff(&before);
//!     // 1000 strings and the vector that holds them are still alive.
//!     assert_eq!(diff.retained_blocks(), 1001);
//!     println!("{diff}"); // a table of sites, biggest change first
//!     # drop(cache);
//! }
//! ```
//!
//! A [`Snapshot`]:
//!
//! | method | what |
//! |---|---|
//! | [`live_bytes()`](Snapshot::live_bytes), [`live_blocks()`](Snapshot::live_blocks) | blocks allocated and not freed (`u64`) |
//! | [`total_bytes()`](Snapshot::total_bytes), [`total_blocks()`](Snapshot::total_blocks) | everything allocated since tracking began |
//! | [`peak_bytes()`](Snapshot::peak_bytes) | the high-water mark of live bytes |
//! | [`os()`](Snapshot::os) | RSS (with its anonymous, file-backed and shared parts), virtual size, peak RSS |
//! | [`allocator()`](Snapshot::allocator) | what the inner allocator says of its own memory (glibc's malloc; jemalloc with the `jemalloc` feature) |
//! | [`sites()`](Snapshot::sites) | every call site: `live_bytes()`, `live_blocks()`, `total_bytes()`, `total_blocks()`, `peak_bytes()`, `peak_blocks()` (its share of the heap at the peak), `stack()` (`frames()`, `label()`, raw `addresses()`) |
//! | [`diff(&before)`](Snapshot::diff) | the [`Diff`] from `before` to this snapshot |
//! | [`save(path)`](Snapshot::save) | the JSON dump, written atomically (temporary file, then rename) |
//! | `Display` | totals, the OS line, and the top sites by live bytes (`{:#}` for all) |
//!
//! A [`Diff`] has [`live_bytes()`](Diff::live_bytes) /
//! [`live_blocks()`](Diff::live_blocks) (`i64`, the net change),
//! [`total_bytes()`](Diff::total_bytes) / [`total_blocks()`](Diff::total_blocks)
//! (allocated in between), [`retained_bytes()`](Diff::retained_bytes) /
//! [`retained_blocks()`](Diff::retained_blocks) (allocated in between and
//! still alive), [`sites()`](Diff::sites) (the same per site, biggest change
//! first) and a `Display`: a heapy-style table whose columns the README
//! explains on the `leaky_worker` example. Why two views of the change: net
//! deltas hide churn. A cache that replaces its 100 entries with 100 new ones
//! has a net change of zero and a retained set of 100.
//!
//! [`reset_peak`] starts a new peak from the current heap, as
//! `tracemalloc.reset_peak()` does, so that each phase of a job shows its
//! own peak:
//!
//! ```
//! # use std::alloc::System;
//! # #[global_allocator]
//! # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
//! # fn main() {
//! let rows: Vec<Vec<u8>> = (0..100).map(|_| vec![0; 1024]).collect();
//! drop(rows);
//! alloc_track::reset_peak();
//! let small = vec![0u8; 16];
//! let peak = alloc_track::snapshot().peak_bytes();
//! assert!(peak < 100 * 1024, "the first phase's peak is forgotten: {peak}");
//! # drop(small);
//! # }
//! ```
//!
//! ## What is counted
//!
//! Every block that passes through the global allocator, exactly: `alloc`,
//! `alloc_zeroed`, `realloc` (which counts as freeing the old block and
//! allocating the new one at the `realloc`'s call site) and `dealloc`, from
//! every thread, whichever thread frees. The tracker's own memory (its
//! tables, snapshots, symbol caches, dumps) never appears in any figure; its
//! size is [`bookkeeping_bytes`]. Memory that does not come from the global
//! allocator (direct `mmap`, C libraries' `malloc`) is not seen: compare the
//! heap with the OS figures that every snapshot carries.
//!
//! # Modes and their costs
//!
//! | mode | chosen with | records | use it for |
//! |---|---|---|---|
//! | full (default) | `Tracker::new(System)` | every allocation with its stack: every figure exact | finding a leak, explaining a peak: development, tests, staging, a canary |
//! | sampled | `Tracker::new(System).sampled(512 * 1024)` | one allocation per 512 KiB allocated on average (Poisson sampling by bytes, as jemalloc, tcmalloc and Go do), weighted by `1/(1-exp(-size/mean))`: per-site figures are unbiased estimates, totals exact, peak exact to within 64 KiB per thread | leaving it on in production |
//! | count | `Tracker::new(System).counting()` | no stacks: exact totals and `measure`, peak exact to within 64 KiB per thread | watching a figure rather than explaining it, at the lowest cost |
//!
//! What each costs, measured against `System` (times as ratios, and
//! instructions per allocation), is in `docs/performance.md`: in short,
//! sampled and count modes are within the noise of `System` on real
//! crates' workloads (+11 to +33 instructions per allocation with frame
//! pointers), full mode 1.5x to 2.0x on one thread with frame pointers and
//! 1.8x to 2.7x without, on Linux with transparent huge pages (`madvise`,
//! the usual default: the tracker's tables ask for them).
//!
//! The environment overrides the mode chosen in code, so a deployed binary
//! switches without a rebuild: `ALLOC_TRACK_MODE=full`, `count`, `sampled`
//! or `sampled:BYTES` (`sampled:1m`, `sampled:65536`). The mode settles at
//! the program's first allocation and never changes; [`mode()`] says which
//! is in force, and every dump records it. [`measure`](fn@measure),
//! [`limits`](fn@limits) and scope logging are exact in every mode (inside
//! a `measure` every allocation of the thread is recorded with its stack).
//! [`seed_sampler`] makes a test's samples repeatable.
//!
//! ```
//! use std::alloc::System;
//! use alloc_track::Mode;
//!
//! #[global_allocator]
//! static GLOBAL: alloc_track::Tracker<System> =
//!     alloc_track::Tracker::new(System).sampled(64 * 1024);
//!
//! fn main() {
//!     if std::env::var_os("ALLOC_TRACK_MODE").is_none() {
//!         assert_eq!(alloc_track::mode(), Mode::Sampled { mean_bytes: 64 * 1024 });
//!     }
//!     // Exact in every mode: one thread's allocations inside the closure.
//!     let (_, diff) = alloc_track::measure(|| vec![1u8; 100]);
//!     assert_eq!(diff.total_blocks(), 1);
//! }
//! ```
//!
//! Full mode captures a stack per allocation, with the fastest of three
//! walkers that works for the build:
//!
//! | walker | when | cost |
//! |---|---|---|
//! | frame pointers | the binary keeps them (`-C force-frame-pointers=yes`, see [below](#building-with-frame-pointers)) | about 1.1 ns (15 instructions) a frame |
//! | CFI (cached DWARF unwind rules, the `framehop` crate) | Linux x86_64 with glibc, no frame pointers: the default build | about 3.4 ns (43 instructions) a frame once its per-thread rule cache is warm |
//! | the platform unwinder (libgcc) | everywhere else, and on threads with too little stack left for the CFI walker | about 40,000 instructions a stack |
//!
//! Each fast walker is compared with the platform unwinder at the first
//! capture and every 8,192nd capture per thread, and turned off for the
//! whole process at its first disagreement. [`stack_walker()`] says which
//! one is in use ([`Walker::FramePointers`], [`Walker::Cfi`],
//! [`Walker::Unwinder`]), as do dumps and the report;
//! `ALLOC_TRACK_UNWIND=unwinder` forces the platform unwinder and
//! `ALLOC_TRACK_UNWIND=cfi` skips the frame-pointer walk (both for
//! comparisons).
//!
//! # Tests: exact allocation counts and limits
//!
//! [`measure`](fn@measure) returns the closure's value and a [`Diff`] restricted to what
//! the calling thread allocated and freed inside it. It is exact even while
//! other threads allocate — other tests under `cargo test` included —
//! because each thread's flows are kept apart; blocks another thread freed
//! before the closure returned are not counted as retained.
//! [`Diff::peak_bytes`] is the most the closure held at once above its
//! starting point. Calls nest. When an assertion fails, `{diff}` prints the
//! per-site table.
//!
//! ```
//! # use std::alloc::System;
//! # #[global_allocator]
//! # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
//! fn handle(items: &[u32]) -> String {
//!     let mut out = String::with_capacity(items.len() * 4);
//!     for item in items {
//!         out.push_str(&item.to_string()); // one allocation per item
//!     }
//!     out
//! }
//!
//! # fn main() {
//! let (response, diff) = alloc_track::measure(|| handle(&[1, 2, 3]));
//! assert_eq!(diff.total_blocks(), 4, "{diff}"); // like Django's assertNumQueries
//! assert_eq!(diff.retained_blocks(), 1, "{diff}"); // only the response lives on
//! # drop(response);
//! # }
//! ```
//!
//! [`limits()`](limits()) bounds what a closure allocates, on its own
//! thread, so the figures are exact under parallel `cargo test` (the
//! analogue of pytest-memray's `limit_memory`/`limit_leaks` and Django's
//! `assertNumQueries`). [`Limits::check`] panics when a limit is exceeded
//! and returns the closure's value otherwise; [`Limits::verify`] checks an
//! existing `Diff` without panicking and returns the same report as an
//! [`Exceeded`] error.
//!
//! ```
//! # use std::alloc::System;
//! # #[global_allocator]
//! # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
//! fn handle_per_item(items: &[u32]) -> String {
//!     items.iter().map(|item| format!("<li>{item}</li>")).collect::<Vec<_>>().concat()
//! }
//!
//! # fn main() {
//! let items: Vec<u32> = (0..500).collect();
//! let response = alloc_track::limits()
//!     .max_blocks(1_100)            // allocations, a realloc counting as one
//!     .max_bytes(64 << 10)          // bytes allocated in all
//!     .max_peak_bytes(1 << 20)      // held at once, above the start
//!     .max_retained_bytes(16 << 10) // still live when the closure returns
//!     .check(|| handle_per_item(&items)); // returns the closure's value
//! assert!(response.starts_with("<li>0</li>"));
//!
//! let (_, diff) = alloc_track::measure(|| handle_per_item(&items));
//! let exceeded = alloc_track::limits().max_blocks(4).verify(&diff).unwrap_err();
//! println!("{exceeded}"); // each exceeded limit, then the per-site table
//! # }
//! ```
//!
//! A failed check panics with each exceeded limit and the per-site table of
//! what the closure allocated (real output of `tests/request_handler.rs`):
//!
//! ```text
//! alloc-track limits exceeded:
//!   allocations: 1,005, limit 4
//! Heap change: +6.5 KiB in +4 blocks net; 6.5 KiB in 4 blocks retained (allocated since and still live); 29.9 KiB allocated in 1,005 blocks
//! Peak above the start: 26.0 KiB
//! Index  Count     %      Size     %  Cumul %  Retained  Allocs  Allocated  Site
//!     0     +1  25.0  +6.4 KiB  98.6     98.6   6.4 KiB       1    6.4 KiB  request_handler::handle_per_item (tests/request_handler.rs:52)
//!     1     +1  25.0     +80 B   1.2     99.8      80 B       1       80 B  request_handler::handle_per_item (tests/request_handler.rs:55)
//!     2     +1  25.0      +8 B   0.1     99.9       8 B       1        8 B  request_handler::handle_per_item (tests/request_handler.rs:56)
//!     3     +1  25.0      +4 B   0.1    100.0       4 B       1        4 B  request_handler::handle_per_item (tests/request_handler.rs:57)
//!     4     +0   0.0      +0 B   0.0    100.0       0 B       1   11.7 KiB  request_handler::handle_per_item (tests/request_handler.rs:51)
//!     5     +0   0.0      +0 B   0.0    100.0       0 B   1,000   11.7 KiB  request_handler::handle_per_item::{{closure}} (tests/request_handler.rs:50)
//! ```
//!
//! Up to 1,023 threads can be inside `measure`, `limits` or
//! `scope(..).log()` at once with every figure exact; past that the
//! retained figures become an upper bound and the `Diff` says so
//! ([`Diff::approximation`]).
//!
//! # Scopes: memory per task, request or test
//!
//! While the guard of [`scope`](fn@scope) lives, every allocation of the calling
//! thread is tagged with the scope's name (scopes nest; the previous one
//! returns when the guard drops). [`Snapshot::scopes`] gives each scope's
//! live heap and what it allocated in all, [`Snapshot::in_scope`] restricts a
//! snapshot to the live blocks allocated inside one scope, dumps carry each
//! site's share per scope, and `alloc-track report` lists the scopes
//! (`--scope NAME` reports only one).
//!
//! ```
//! # use std::alloc::System;
//! # #[global_allocator]
//! # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
//! # fn main() {
//! let kept = {
//!     let _request = alloc_track::scope("GET /report"); // tags this thread's allocations
//!     vec![0u8; 4096]
//! };
//! let report = alloc_track::snapshot().in_scope("GET /report");
//! assert_eq!(report.live_bytes(), 4096);
//! # drop(kept);
//! # }
//! ```
//!
//! Per-task memory logging in a worker's main loop is one line:
//! [`ScopeGuard::log`] prints one line on stderr when the task ends.
//!
//! ```
//! # use std::alloc::System;
//! # #[global_allocator]
//! # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
//! # fn run(task: usize) -> usize { vec![0u8; 1000].len() + task }
//! # fn main() {
//! for task in 0..3 {
//!     let _task = alloc_track::scope("task").log(); // one line on stderr when the task ends
//!     run(task);
//! }
//! # }
//! ```
//!
//! ```text
//! alloc-track: scope "task": +0 B live in +0 blocks, 1000 B allocated in 1 blocks, peak +1000 B
//! ```
//!
//! # Live dumps, and every environment variable
//!
//! The people this is for run workers and servers that grow for hours, and
//! cannot stop them to look.
//!
//! A deployed binary that has the `Tracker` installed needs no rebuild to be
//! profiled: set environment variables when starting it. Values are read in
//! any case, blanks around them ignored; an empty value is unset. A bad
//! value costs one line on standard error naming it and what is used
//! instead, never a panic.
//!
//! | variable | accepts | effect |
//! |---|---|---|
//! | `ALLOC_TRACK_DUMP` | a path; `{pid}` in it is replaced by the process id | write a dump there when the process exits: normal return from `main` or `std::process::exit` (not on a crash, `abort` or a kill signal) |
//! | `ALLOC_TRACK_INTERVAL` | seconds, decimals allowed, at least 0.001 | also every that many seconds, to numbered files beside the path: `heap.json` gives `heap.1.json`, `heap.2.json`, ... |
//! | `ALLOC_TRACK_SIGNAL` | `USR1` or `USR2` (`SIGUSR1`, `usr2`; Unix) | also whenever the process receives that signal, to the same numbered files |
//! | `ALLOC_TRACK_KEEP` | a whole number above 0 | keep only the newest that many numbered dumps, deleting older ones |
//! | `ALLOC_TRACK_MODE` | `full`, `count`, `sampled`, `sampled:BYTES` (`k`/`m`/`g` suffixes: `sampled:1m`) | the [mode](#modes-and-their-costs), overriding the one chosen in code |
//! | `ALLOC_TRACK_UNWIND` | `unwinder`, `cfi` | force the platform unwinder, or skip the frame-pointer walk (for comparisons) |
//!
//! `ALLOC_TRACK_INTERVAL` and `ALLOC_TRACK_SIGNAL` need `ALLOC_TRACK_DUMP`
//! to name the dumps. `{pid}` lets several processes started with the same
//! environment write different files
//! (`ALLOC_TRACK_DUMP=/var/tmp/worker-{pid}.json`).
//!
//! ```text
//! ALLOC_TRACK_DUMP=heap.json ALLOC_TRACK_INTERVAL=60 ALLOC_TRACK_SIGNAL=USR1 ./my-service &
//! kill -USR1 $!                                  # one more dump now: heap.N.json
//! alloc-track trend heap.*.json                  # what grows
//! ```
//!
//! How it works, and what it costs:
//!
//! - On Linux, Android and FreeBSD a constructor (`.init_array`) reads the
//!   variables before `main`; with none set it does nothing at all. On other
//!   platforms call [`start_live_dumps`] at the top of `main`.
//! - Periodic and signal dumps are written by one background thread, started
//!   only when an interval or a signal is configured. The signal handler only
//!   writes a byte to a pipe; the thread waits on it with `poll`, so a signal
//!   is answered at once and an idle process wakes only for its ticks. The
//!   allocator's hot path is untouched.
//! - The exit dump is written by an `atexit` hook. A child made by `fork`
//!   inherits the hook but never overwrites its parent's dump.
//! - Every dump is written to a temporary file and renamed: a crash mid-write
//!   never leaves a half file under the real name.
//! - A dump that cannot be written, or a variable with a bad value, costs one
//!   line on standard error, never a panic:
//!   `alloc-track: ALLOC_TRACK_INTERVAL="often" is not a number of seconds (at least 0.001); no periodic dumps`.
//!
//! Code that wants to decide itself (an HTTP admin endpoint, every 1,000th
//! task) calls [`dump()`](fn@dump), or [`Snapshot::save`] to keep the
//! snapshot for a diff as well. [`numbered_path`] gives the names the
//! periodic dumps use. The format is versioned and documented in the
//! [`dump`](mod@dump) module and in `docs/dump-format.md`.
//!
//! ```
//! # use std::alloc::System;
//! # #[global_allocator]
//! # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let path = std::env::temp_dir().join(format!("alloc-track-doc-{}.json", std::process::id()));
//! alloc_track::dump(&path)?; // then: alloc-track report heap.json
//! assert!(std::fs::metadata(&path)?.len() > 0);
//! # std::fs::remove_file(&path)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Viewing: the `alloc-track` command line
//!
//! Install it with `cargo install --path alloc-track-cli`. Every command
//! validates the dumps it reads (bad input: one line on stderr, exit code
//! 1; bad usage: exit code 2), reads `-` as standard input, and takes
//! `--focus REGEX` / `--ignore REGEX` to keep or drop stacks with a
//! matching frame. A row is what its label shows: `function (file:line)`
//! of the first frame, from the allocation, that is not standard-library
//! code, matched by that label across dumps. `docs/cli.md` shows each
//! command's real output.
//!
//! | command | what it shows |
//! |---|---|
//! | `alloc-track report DUMP` | the totals, the OS's memory and the gap between heap and RSS, the top sites, what the heap held at its peak, and an interactive flamegraph SVG beside the dump; `--json` for scripts, `--scope NAME`, `--crate NAME` for "your code" |
//! | `alloc-track flamegraph DUMP -o OUT.svg` | the flamegraph alone; `--icicle` draws it top-down, `--site-at-root` puts the allocating function at the root |
//! | `alloc-track diff BEFORE AFTER` | per-site growth and shrinkage (rows matched by label, so two runs compare), the retained set when both dumps come from one process, and two differential flamegraphs |
//! | `alloc-track trend DUMP...` | a series of dumps in the order taken: each site's shape (growing, steps, grew once, varies, shrinking, flat), likely leaks first, with a rate, a sparkline and an SVG line chart |
//! | `alloc-track export DUMP --format F` | `folded` (collapsed stacks for flamegraph.pl, inferno, speedscope), `pprof` (gzipped `profile.proto` for go tool pprof, Pyroscope, Parca), `dhat` (DHAT's JSON for `dh_view.html`) |
//! | `alloc-track run -- CMD` | runs a program with `ALLOC_TRACK_DUMP` set and prints the report; for `cargo run/test/bench` it builds with frame pointers, debug info and v0 mangling into `target/alloc-track` |
//! | `alloc-track completions SHELL` | a completion script for bash, zsh, fish, elvish or powershell |
//! | `alloc-track man` | the man page (`alloc-track man \| man -l -`) |
//!
//! `--by` chooses what `report`, `flamegraph`, `diff` and `export` weigh:
//!
//! | `--by` | weighs |
//! |---|---|
//! | `live` (default) | live bytes |
//! | `peak` | each site's bytes at the heap's peak (needs the tracker's peak breakdown) |
//! | `allocated` | bytes allocated since tracking began: allocator churn |
//! | `blocks` | live blocks: many small objects |
//! | `type` | the live heap by the kind of object holding it (`Box<Node>`, `Vec<Widget>`, `HashMap<K, V>`, `String`), read from the standard-library frames of each stack; element types need `-C symbol-mangling-version=v0`. [`Snapshot::by_type`] and the [`types`] module give the same in code |
//! | `temporary` | blocks freed by their thread before it allocated anything else (heaptrack's "temporary" allocations): the churn a reused buffer removes. Exact in full mode, estimated in sampled mode, absent in count mode |
//!
//! # Building with frame pointers
//!
//! Full tracking spends most of its time capturing stacks. Walking frame
//! pointers takes a few nanoseconds a frame, the CFI walker several times
//! that, the platform unwinder about 100 ns; the tracker uses the walk when
//! the code on the stack keeps frame pointers (Rust's standard library does
//! since 1.79). Build your own crates with them:
//!
//! ```sh
//! RUSTFLAGS="-C force-frame-pointers=yes" cargo bench -p alloc-track --bench overhead
//! ```
//!
//! or, for every build of a project, in `.cargo/config.toml`:
//!
//! ```toml
//! [build]
//! rustflags = ["-C", "force-frame-pointers=yes"]
//! ```
//!
//! (`RUSTFLAGS` set in the environment replaces this setting rather than
//! adding to it.) `alloc-track run` adds the flag itself, building into a
//! target directory of its own.
//!
//! # Heap vs RSS
//!
//! When the process uses much more memory than its live heap,
//! [`Snapshot::memory_breakdown`] takes the RSS apart: live heap, the
//! allocator's free memory and overhead, the tracker's own tables,
//! file-backed pages, and the remainder, each part marked with what measured
//! it, with advice stated from the figures (what [`trim`] would return,
//! fragmentation, glibc arenas). [`Snapshot::allocator`] has the allocator's
//! own figures: `mallinfo2` and the arenas for glibc's malloc under
//! `System`; jemalloc's `stats.*` with the `jemalloc` feature
//! (`alloc-track = { version = "0.1", features = ["jemalloc"] }` and
//! `Tracker::new(tikv_jemallocator::Jemalloc)`; the feature builds jemalloc
//! from source). mimalloc's figures are not read.
//!
//! [`trim`] gives the allocator's free pages back to the OS (glibc's
//! `malloc_trim(0)`, jemalloc's `arena.<all>.purge`) and reports what the
//! RSS did:
//!
//! ```
//! # use std::alloc::System;
//! # #[global_allocator]
//! # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
//! # fn main() {
//! let strings: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
//! drop(strings);
//! if let Some(breakdown) = alloc_track::snapshot().memory_breakdown() {
//!     for advice in breakdown.advice() {
//!         println!("{advice}");
//!     }
//! }
//! if let Some(trimmed) = alloc_track::trim() {
//!     println!("RSS dropped by {:?} bytes", trimmed.rss_dropped());
//! }
//! # }
//! ```
//!
//! `docs/heap-vs-rss.md` walks through `examples/fragmentation.rs` (a heap
//! of 632 KiB in an RSS of 176 MiB) with glibc and with jemalloc.
//!
//! # Guarantees and limits
//!
//! In full mode every count and byte is exact, on every thread, whichever
//! thread frees; sampled mode keeps totals exact and estimates per-site
//! figures; count mode has totals only. The hot path takes no global lock,
//! never panics, never does I/O and never resolves symbols; fork, signals,
//! thread teardown and allocations after `main` are safe; dumps are never
//! half-written and never replace what is not a regular file. Stacks are
//! kept to 128 frames, distinct stacks to 4,194,304 by default
//! ([`Tracker::max_sites`]); past a limit the tracker degrades, counts what
//! it could not record ([`Snapshot::health`]) and says so. Not tracked:
//! memory that does not come from the global allocator, and the tracker's
//! own. `docs/guarantees.md` states each promise with the test that holds
//! it.
//!
//! # Platform support
//!
//! Tested on Linux with glibc (x86_64), where every feature works: the CFI
//! walker (Linux x86_64 with glibc), the allocator's own figures (glibc's
//! malloc, or jemalloc with the feature), live dumps started before `main`
//! (Linux, Android, FreeBSD; elsewhere call [`start_live_dumps`]). The fork
//! handlers are registered on ELF platforms and macOS. Signal dumps work on
//! Unix only. Elsewhere stacks come from the platform unwinder, or from the
//! frame-pointer walk when the build keeps frame pointers.

mod allocator_stats;
mod diff;
pub mod dump;
mod dump_build;
mod fork_safe;
mod hot;
pub mod human;
mod limits;
mod live_by_site;
mod live_dump;
mod measure;
mod memory_breakdown;
mod os_memory;
mod scope;
mod settings;
mod site;
mod snapshot;
mod symbolize;
mod table;
mod tracker;
pub mod types;

use std::sync::atomic::Ordering;

pub use allocator_stats::{trim, Trimmed};
pub use diff::{Diff, SiteDiff};
pub use dump::Frame;
pub use hot::view::capture::Walker;
pub use hot::view::config::{Mode, DEFAULT_SAMPLE_BYTES};
pub use limits::{limits, Exceeded, Limits};
pub use live_dump::{dump, numbered_path, start_live_dumps};
pub use measure::{measure, Approximation};
pub use memory_breakdown::{MemoryBreakdown, MemoryKind, MemoryPart};
pub use scope::{scope, LoggedScope, ScopeGuard};
pub use site::{Site, Stack};
pub use snapshot::{ScopeStats, Snapshot};
pub use tracker::Tracker;

/// Takes a [`Snapshot`] of the live heap now.
///
/// # Panics
///
/// If the [`Tracker`] is not the program's global allocator: the snapshot
/// would be silently empty.
pub fn snapshot() -> Snapshot {
    ensure_installed("snapshot");
    Snapshot::take()
}

/// Starts a new peak from the live heap as it is now, as Python's
/// `tracemalloc.reset_peak()` does: the next [`Snapshot::peak_bytes`] and
/// the per-site peak figures describe the high-water mark since this call.
/// Use it between the phases of a job to see each phase's own peak.
pub fn reset_peak() {
    hot::view::thread::untracked(|| hot::view::counters::COUNTERS.reset_peak());
}

/// The mode the tracker records in: the one chosen in code
/// ([`Tracker::sampled`], [`Tracker::counting`], full by default) unless the
/// environment variable `ALLOC_TRACK_MODE` overrode it. Settled at the
/// program's first allocation and fixed from then on.
pub fn mode() -> Mode {
    is_installed();
    hot::view::config::settled_mode().unwrap_or(Mode::Full)
}

/// Seeds the sampler of [`Mode::Sampled`] so that a test's samples are
/// the same in every run: the calling thread restarts its sequence from
/// `seed`, and threads that start sampling afterwards derive theirs from
/// it. Figures stay estimates; only their randomness becomes repeatable.
pub fn seed_sampler(seed: u64) {
    hot::view::sampler::reseed(seed);
}

/// How stacks are being captured: [`Walker::FramePointers`] when the binary
/// keeps frame pointers (build with `-C force-frame-pointers=yes`) and the
/// start-up check against the unwinder passed; else, on Linux x86_64 with
/// glibc, [`Walker::Cfi`] when the cached DWARF CFI walker's check passed;
/// else [`Walker::Unwinder`].
/// Settled at the first captured stack.
pub fn stack_walker() -> Walker {
    is_installed();
    hot::view::capture::walker()
}

/// True when a [`Tracker`] is this program's global allocator.
pub fn is_installed() -> bool {
    if !hot::view::counters::INSTALLED.load(Ordering::Relaxed) {
        // One allocation through the global allocator: a Tracker, if it is
        // installed, notices it.
        drop(std::hint::black_box(Box::new(0u64)));
    }
    hot::view::counters::INSTALLED.load(Ordering::Relaxed)
}

/// Bytes of memory the tracker itself uses for its books (the live table
/// and the stack table), outside every figure it reports. Divide by
/// [`Snapshot::live_blocks`] for its cost per live block.
pub fn bookkeeping_bytes() -> u64 {
    hot::view::thread::untracked(|| {
        (hot::view::live::heap_bytes() + hot::view::stacks::heap_bytes()) as u64
    })
}

fn ensure_installed(api: &str) {
    assert!(
        is_installed(),
        "alloc_track::{api}() needs the tracker installed in this binary: \
         `#[global_allocator] static GLOBAL: alloc_track::Tracker<std::alloc::System> = \
         alloc_track::Tracker::new(std::alloc::System);`"
    );
}
