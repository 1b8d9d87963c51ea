//! The overhead benchmark's workloads: what each thread does, at three
//! sizes. Shared by the bench binary (`benches/overhead.rs`) and its smoke
//! test (`tests/bench_smoke.rs`), so the test runs exactly the code that is
//! timed.
//!
//! Nothing here knows which allocator is installed: the same code runs
//! under `System` and under every tracker mode, and only the ratio of the
//! times means anything.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::{Barrier, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[path = "crates.rs"]
mod crates;

/// One kind of work, run by every thread of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Small-allocation churn from deep call chains.
    Churn,
    /// A large map and a vector grown by push, kept alive.
    Build,
    /// serde_json round trips of a nested document.
    Json,
    /// Popular crates doing real work: syn, prettyplease, serde_json and
    /// regex (`crates.rs`). Its units are split across the threads.
    Crates,
    /// The churn at a given call depth, 64 blocks live: the depth series
    /// that shows what each frame of a stack costs.
    Depth(u32),
}

/// The call depths of the depth series.
pub const DEPTHS: [u32; 5] = [5, 20, 40, 80, 120];

impl Workload {
    pub const ALL: [Workload; 9] = [
        Workload::Churn,
        Workload::Build,
        Workload::Json,
        Workload::Crates,
        Workload::Depth(DEPTHS[0]),
        Workload::Depth(DEPTHS[1]),
        Workload::Depth(DEPTHS[2]),
        Workload::Depth(DEPTHS[3]),
        Workload::Depth(DEPTHS[4]),
    ];

    pub fn name(self) -> String {
        match self {
            Workload::Churn => "churn".into(),
            Workload::Build => "build".into(),
            Workload::Json => "json".into(),
            Workload::Crates => "crates".into(),
            Workload::Depth(depth) => format!("depth-{depth}"),
        }
    }

    /// The inverse of [`name`](Workload::name); any depth from 1 to 1000
    /// is accepted, not only the series' own.
    pub fn parse(name: &str) -> Option<Workload> {
        if let Some(depth) = name.strip_prefix("depth-") {
            return match depth.parse() {
                Ok(depth @ 1..=1000) => Some(Workload::Depth(depth)),
                _ => None,
            };
        }
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// How much work one thread does in each workload.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// Live blocks each churn thread keeps in its ring.
    pub churn_ring: usize,
    /// Blocks each churn thread allocates (and frees) after filling it.
    pub churn_steps: usize,
    /// Entries in each build thread's map.
    pub build_entries: usize,
    /// Elements pushed onto each build thread's vector.
    pub build_pushes: usize,
    /// Orders in the JSON document.
    pub json_orders: usize,
    /// Serialise-then-parse round trips of the document per thread.
    pub json_round_trips: usize,
    /// Blocks each thread of a depth-series run allocates and frees.
    pub depth_steps: usize,
    /// The crates workload, shared out between the threads.
    pub crates: crates::CratesSize,
}

impl Size {
    /// The benchmark proper: each workload takes roughly 0.2 to 0.6 s under
    /// `System` on one core of a 2020s machine, long enough that start-up
    /// and timer noise vanish, short enough that full tracking, several
    /// times slower, still fits a run of several rounds.
    pub const FULL: Size = Size {
        churn_ring: 4096,
        churn_steps: 2_000_000,
        build_entries: 1_000_000,
        build_pushes: 4_000_000,
        json_orders: 64,
        json_round_trips: 1000,
        depth_steps: 1_000_000,
        crates: crates::CratesSize::FULL,
    };

    /// `--quick`: a smoke run of the whole benchmark in seconds; its
    /// figures are noise.
    pub const QUICK: Size = Size {
        churn_ring: 1024,
        churn_steps: 100_000,
        build_entries: 50_000,
        build_pushes: 200_000,
        json_orders: 16,
        json_round_trips: 20,
        depth_steps: 40_000,
        crates: crates::CratesSize::QUICK,
    };

    /// The smoke test, and each child's warm-up before it is timed.
    pub const SMOKE: Size = Size {
        churn_ring: 64,
        churn_steps: 2_000,
        build_entries: 2_000,
        build_pushes: 10_000,
        json_orders: 4,
        json_round_trips: 2,
        depth_steps: 2_000,
        crates: crates::CratesSize::SMOKE,
    };

    /// One child per configuration under callgrind, which runs code some
    /// 50 times slower: a few tens of thousands of allocations each, enough
    /// that the per-allocation figures settle.
    pub const CALLGRIND: Size = Size {
        churn_ring: 1024,
        churn_steps: 30_000,
        build_entries: 10_000,
        build_pushes: 40_000,
        json_orders: 16,
        json_round_trips: 20,
        depth_steps: 20_000,
        crates: crates::CratesSize::CALLGRIND,
    };

    pub fn parse(name: &str) -> Option<Size> {
        match name {
            "full" => Some(Size::FULL),
            "quick" => Some(Size::QUICK),
            "smoke" => Some(Size::SMOKE),
            "callgrind" => Some(Size::CALLGRIND),
            _ => None,
        }
    }
}

/// What a thread's work leaves alive until the end of the run: the build
/// workload's map and vector, and the crates workload's JSON `Value`
/// trees, whose bookkeeping the benchmark reports.
pub enum Kept {
    Nothing,
    // Held only to stay alive while the bench measures the bookkeeping.
    #[allow(dead_code)]
    Trees(Vec<serde_json::Value>),
    // The bench only holds these, to keep them alive; the smoke test reads
    // them.
    #[allow(dead_code)]
    Built {
        map: HashMap<u64, String>,
        values: Vec<u64>,
    },
}

/// Runs `workload` on `threads` threads at once and returns the wall time
/// from the moment all of them are released until the last one finishes,
/// and what they keep alive.
///
/// Every thread does the same amount of work (the crates workload excepted:
/// its threads share one amount out), so with two threads the allocator
/// serves twice the allocations in (ideally) the same time; contention
/// inside it shows as a higher ratio than with one.
///
/// `measured` sends each thread's work through [`measured_work`], the
/// function whose calls callgrind counts (`--toggle-collect`), so that a
/// warm-up run is not counted with the measured one.
pub fn run(
    workload: Workload,
    threads: usize,
    size: &Size,
    measured: bool,
) -> (Duration, Vec<Kept>) {
    let exchange = Exchange::new();
    // One more party than workers: the timer starts when the main thread
    // passes the barrier, i.e. once every worker exists and waits, so
    // thread creation is outside the measurement.
    let barrier = Barrier::new(threads + 1);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|index| {
                let (barrier, exchange) = (&barrier, &exchange);
                let share = Share { index, threads };
                scope.spawn(move || {
                    barrier.wait();
                    if measured {
                        measured_work(workload, share, size, exchange)
                    } else {
                        run_one(workload, share, size, exchange)
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let kept = workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        (start.elapsed(), kept)
    })
}

/// Which thread of how many: the crates workload splits its units by it.
#[derive(Clone, Copy)]
pub struct Share {
    pub index: usize,
    pub threads: usize,
}

/// The measured run's work on one thread. Its name is what the bench's
/// callgrind runs toggle collection on: keep it unique and never inlined.
#[inline(never)]
pub fn measured_work(workload: Workload, share: Share, size: &Size, exchange: &Exchange) -> Kept {
    black_box(run_one(workload, share, size, exchange))
}

fn run_one(workload: Workload, share: Share, size: &Size, exchange: &Exchange) -> Kept {
    // Distinct seeds per thread: the same amount of work, not the same
    // addresses in the same order.
    let mut rng = XorShift::new(0x9E37_79B9_7F4A_7C15 ^ (share.index as u64 + 1));
    match workload {
        Workload::Churn => {
            churn(
                size.churn_ring,
                size.churn_steps,
                CHAIN_DEPTH,
                &mut rng,
                exchange,
            );
            Kept::Nothing
        }
        Workload::Build => build(size, &mut rng),
        Workload::Json => {
            json(size, &mut rng);
            Kept::Nothing
        }
        Workload::Crates => crates::run(&size.crates, share),
        Workload::Depth(depth) => {
            churn(
                DEPTH_RING,
                size.depth_steps,
                depth_levels(depth),
                &mut rng,
                exchange,
            );
            Kept::Nothing
        }
    }
}

/// xorshift64*: deterministic, allocation-free and fast enough to vanish
/// next to an allocation.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `low..=high`.
    pub(crate) fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

// ---------------------------------------------------------------------
// churn
// ---------------------------------------------------------------------

/// Recursion levels above each allocation. With the churn loop and the
/// leaf that allocates, the workload's own frames are 15 deep: the issue's
/// "call chain about 15 functions deep", which is what a stack-capturing
/// tracker pays for per allocation.
const CHAIN_DEPTH: u32 = 13;

/// One churn step in eight hands its block to a slot shared by all
/// threads and frees whatever block was there, so with two threads some
/// blocks are freed by the thread that did not allocate them (the case
/// that makes a tracker's tables shared rather than per-thread).
const EXCHANGE_EVERY: usize = 8;
const EXCHANGE_SLOTS: usize = 64;

/// The slots through which churn threads pass blocks to each other.
pub struct Exchange {
    slots: Vec<Mutex<Option<Vec<u8>>>>,
}

impl Exchange {
    pub fn new() -> Exchange {
        Exchange {
            slots: (0..EXCHANGE_SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Puts `block` in slot `index` and returns the block it displaces.
    fn swap(&self, index: usize, block: Vec<u8>) -> Option<Vec<u8>> {
        // A panic elsewhere cannot leave a slot half-written: the value is
        // still a valid `Option`, so poisoning is ignored.
        let mut slot = self.slots[index % self.slots.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slot.replace(block)
    }
}

/// Live blocks in each thread's ring in the depth series.
const DEPTH_RING: usize = 64;

/// The recursion levels that put an allocation `depth` frames below the
/// thread's entry into the churn loop: the loop, `allocate_deep` and the
/// leaf are three of them, each level of `descend` one more. (The thread's
/// own start-up frames and the allocator's sit on top, the same at every
/// depth, so differences between depths are exact.)
fn depth_levels(depth: u32) -> u32 {
    depth.saturating_sub(3)
}

/// A ring of `ring` live blocks of 8 B to 4 KiB; each of `steps` steps
/// allocates a new block at the bottom of a call chain `levels` deep and
/// frees the one it replaces.
#[inline(never)]
fn churn(ring: usize, steps: usize, levels: u32, rng: &mut XorShift, exchange: &Exchange) {
    let mut ring: Vec<Vec<u8>> = (0..ring).map(|_| allocate_deep(rng, levels)).collect();
    for step in 0..steps {
        let block = allocate_deep(rng, levels);
        if step % EXCHANGE_EVERY == 0 {
            let displaced = exchange.swap(rng.next() as usize, block);
            // Freed here, possibly allocated by the other thread.
            drop(black_box(displaced));
        } else {
            let slot = rng.next() as usize % ring.len();
            ring[slot] = block;
        }
    }
    black_box(&ring);
}

#[inline(never)]
fn allocate_deep(rng: &mut XorShift, levels: u32) -> Vec<u8> {
    let size = rng.between(8, 4096) as usize;
    // Four call sites, each its own leaf: a few distinct stacks, as in a
    // real program, rather than one stack the tracker finds every time.
    let site = (rng.next() % 4) as u32;
    descend(black_box(levels), site, size)
}

/// One frame per level. `#[inline(never)]` keeps each level a real frame,
/// and the use of the block after the recursive call means it is not a
/// tail call the optimiser could turn into a loop.
#[inline(never)]
fn descend(depth: u32, site: u32, size: usize) -> Vec<u8> {
    if depth == 0 {
        return match site {
            0 => leaf_parse(size),
            1 => leaf_buffer(size),
            2 => leaf_node(size),
            _ => leaf_scratch(size),
        };
    }
    let block = descend(black_box(depth - 1), site, size);
    black_box(&block);
    block
}

// The leaves write one byte each, and a different one, so that the
// linker cannot fold them into one function and one call site.

#[inline(never)]
fn leaf_parse(size: usize) -> Vec<u8> {
    let mut block = Vec::with_capacity(size);
    block.push(1);
    block
}

#[inline(never)]
fn leaf_buffer(size: usize) -> Vec<u8> {
    let mut block = Vec::with_capacity(size);
    block.push(2);
    block
}

#[inline(never)]
fn leaf_node(size: usize) -> Vec<u8> {
    let mut block = Vec::with_capacity(size);
    block.push(3);
    block
}

#[inline(never)]
fn leaf_scratch(size: usize) -> Vec<u8> {
    let mut block = Vec::with_capacity(size);
    block.push(4);
    block
}

// ---------------------------------------------------------------------
// build
// ---------------------------------------------------------------------

/// The shape of a program's start-up or a cache fill: a million small
/// strings in a map that rehashes as it grows, and one large vector that
/// grows by doubling (reallocations of up to tens of MiB).
#[inline(never)]
fn build(size: &Size, rng: &mut XorShift) -> Kept {
    let mut map = HashMap::new();
    for _ in 0..size.build_entries {
        let key = rng.next();
        map.insert(key, format!("value-{key}"));
    }
    let mut values = Vec::new();
    for i in 0..size.build_pushes {
        values.push(i as u64 ^ rng.next());
    }
    Kept::Built {
        map: black_box(map),
        values: black_box(values),
    }
}

// ---------------------------------------------------------------------
// json
// ---------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
pub(crate) struct Order {
    id: u64,
    customer: Customer,
    items: Vec<Item>,
    tags: Vec<String>,
    attributes: BTreeMap<String, String>,
    note: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Customer {
    name: String,
    email: String,
    address: Address,
}

#[derive(Serialize, Deserialize)]
struct Address {
    street: String,
    city: String,
    postcode: String,
    country: String,
}

#[derive(Serialize, Deserialize)]
struct Item {
    sku: String,
    name: String,
    quantity: u32,
    price_cents: u64,
    options: BTreeMap<String, String>,
}

/// A web service's inner loop: a document of orders serialised to text
/// and parsed back, over and over; each round trip allocates every
/// string, vector and map node of the document anew.
#[inline(never)]
fn json(size: &Size, rng: &mut XorShift) {
    let mut orders: Vec<Order> = (0..size.json_orders).map(|i| order(i, rng)).collect();
    for _ in 0..size.json_round_trips {
        let text = serde_json::to_string(&orders).expect("an order always serialises");
        // The parsed copy replaces the original, so the next round trip
        // serialises what this one allocated.
        orders = serde_json::from_str(black_box(&text)).expect("serde_json parses its own output");
    }
    assert_eq!(orders.len(), size.json_orders);
}

pub(crate) fn order(index: usize, rng: &mut XorShift) -> Order {
    const CITIES: [&str; 4] = ["Lisbon", "Osaka", "Winnipeg", "Tbilisi"];
    let items = (0..rng.between(1, 8))
        .map(|i| Item {
            sku: format!("SKU-{:08X}", rng.next() as u32),
            name: format!("Item number {i} of order {index}"),
            quantity: rng.between(1, 20) as u32,
            price_cents: rng.between(99, 99_999),
            options: (0..rng.between(0, 3))
                .map(|o| (format!("option{o}"), format!("value {}", rng.next() % 100)))
                .collect(),
        })
        .collect();
    Order {
        id: rng.next(),
        customer: Customer {
            name: format!("Customer {index}"),
            email: format!("customer{index}@example.com"),
            address: Address {
                street: format!("{} Long Street", rng.between(1, 999)),
                city: CITIES[index % CITIES.len()].to_string(),
                postcode: format!("{:05}", rng.next() % 100_000),
                country: "Somewhere".to_string(),
            },
        },
        items,
        tags: (0..rng.between(0, 4)).map(|t| format!("tag-{t}")).collect(),
        attributes: (0..rng.between(1, 5))
            .map(|a| {
                (
                    format!("attribute-{a}"),
                    "x".repeat(rng.between(1, 40) as usize),
                )
            })
            .collect(),
        note: (rng.between(0, 2) == 0).then(|| "Leave at the door, please.".to_string()),
    }
}
