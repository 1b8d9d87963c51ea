//! The "crates" workload: popular crates from crates.io doing the work
//! they exist for, so that the allocations, their sizes, lifetimes and
//! stacks (typically 20 frames or more, through the crates' own parsers)
//! are theirs and not a loop written to allocate.
//!
//! - syn parses generated Rust sources, prettyplease prints them, quote
//!   turns them back into tokens, and syn parses the printed text again;
//! - serde_json parses a few MB of orders into `Value` trees and into
//!   derived structs, and prints them back;
//! - regex compiles ~150 patterns and matches them over generated logs.
//!
//! Every input is generated in-process from a fixed seed. The work is a
//! list of units, dealt round-robin to the threads, so two threads share
//! the same total work as one.

use std::fmt::Write as _;
use std::hint::black_box;

use quote::ToTokens;
use regex::Regex;

use super::{order, Kept, Order, Share, XorShift};

/// How much work the whole run does, shared out between the threads.
#[derive(Clone, Copy, Debug)]
pub struct CratesSize {
    /// Units of each kind (syn, serde_json, regex) in the run.
    pub units: usize,
    /// Items (structs, enums, impls, functions) per generated source file.
    pub syn_items: usize,
    /// Orders per JSON document (about 600 bytes each).
    pub json_orders: usize,
    /// Regex patterns compiled per regex unit.
    pub regex_patterns: usize,
    /// Log lines the patterns are matched over.
    pub regex_lines: usize,
}

impl CratesSize {
    /// About 5 million allocations: 2 units of each kind, each file
    /// ~200 KB of Rust, each document ~1.5 MB of JSON.
    pub const FULL: CratesSize = CratesSize {
        units: 2,
        syn_items: 800,
        json_orders: 2400,
        regex_patterns: 150,
        regex_lines: 4000,
    };

    pub const QUICK: CratesSize = CratesSize {
        units: 1,
        syn_items: 60,
        json_orders: 150,
        regex_patterns: 30,
        regex_lines: 100,
    };

    /// The smoke test (in a debug build) and every child's warm-up.
    pub const SMOKE: CratesSize = CratesSize {
        units: 1,
        syn_items: 5,
        json_orders: 5,
        regex_patterns: 6,
        regex_lines: 10,
    };

    pub const CALLGRIND: CratesSize = CratesSize {
        units: 1,
        syn_items: 30,
        json_orders: 40,
        regex_patterns: 24,
        regex_lines: 50,
    };
}

/// Runs this thread's share of the units; keeps every JSON `Value` tree
/// it parsed alive (a heap of small blocks, for the bookkeeping figure, and
/// the same heap whatever the number of threads).
pub fn run(size: &CratesSize, share: Share) -> Kept {
    let mut trees = Vec::new();
    // Units in the order syn, json, regex, syn, ...: with two threads each
    // gets a mix of the three kinds.
    for unit in (share.index..3 * size.units).step_by(share.threads.max(1)) {
        let seed = 0xC0FF_EE00 + unit as u64;
        match unit % 3 {
            0 => syn_unit(size, seed),
            1 => trees.push(json_unit(size, seed)),
            _ => regex_unit(size, seed),
        }
    }
    Kept::Trees(trees)
}

// ---------------------------------------------------------------------
// syn, prettyplease, quote
// ---------------------------------------------------------------------

#[inline(never)]
fn syn_unit(size: &CratesSize, seed: u64) {
    let source = rust_source(size.syn_items, &mut XorShift::new(seed));
    let file = syn::parse_file(&source).expect("the generated source parses");
    let pretty = prettyplease::unparse(&file);
    let tokens = file.to_token_stream().to_string();
    let reparsed = syn::parse_file(&pretty).expect("prettyplease prints valid Rust");
    assert_eq!(
        reparsed.items.len(),
        file.items.len(),
        "prettyplease lost items"
    );
    // extra-traits' structural equality, item by item (a macro's tokens
    // may come back with other spacing, so not all need be equal), and
    // its Debug printing, as a test of a code generator would use them.
    let unchanged = file
        .items
        .iter()
        .zip(&reparsed.items)
        .filter(|(a, b)| a == b)
        .count();
    let debug = format!("{:?}", reparsed.items.last());
    black_box((tokens.len(), unchanged, debug.len()));
}

/// A Rust source file of `items` items of several kinds, with generics,
/// attributes, closures, matches and macros, as a real crate has.
fn rust_source(items: usize, rng: &mut XorShift) -> String {
    const TYPES: [&str; 6] = [
        "u32",
        "String",
        "Vec<u8>",
        "Option<i64>",
        "bool",
        "HashMap<String, usize>",
    ];
    let mut out = String::from("use std::collections::HashMap;\nuse std::fmt;\n\n");
    for i in 0..items {
        let ty = TYPES[rng.next() as usize % TYPES.len()];
        match i % 5 {
            0 => {
                let _ = writeln!(out, "/// Record number {i}.\n#[derive(Debug, Clone, PartialEq)]\npub struct Record{i}<T: Clone> {{");
                for f in 0..rng.between(2, 7) {
                    let _ = writeln!(
                        out,
                        "    pub field_{f}: {},",
                        TYPES[(f as usize + i) % TYPES.len()]
                    );
                }
                let _ = writeln!(out, "    pub extra: Option<T>,\n}}\n");
            }
            1 => {
                let _ = writeln!(out, "#[derive(Debug)]\npub enum Event{i} {{\n    Started {{ id: u64, name: String }},\n    Progress(u32, f64),\n    Failed(Box<dyn std::error::Error + Send>),\n    Done,\n}}\n");
            }
            2 => {
                let _ = writeln!(
                    out,
                    "impl fmt::Display for Event{prev} {{\n    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {{\n        match self {{\n            Event{prev}::Started {{ id, name }} => write!(f, \"started {{}} ({{}})\", name, id),\n            Event{prev}::Progress(done, rate) if *rate > 0.5 => write!(f, \"{{}} fast {{:.2}}\", done, rate),\n            Event{prev}::Progress(done, _) => write!(f, \"{{}} slow\", done),\n            Event{prev}::Failed(error) => write!(f, \"failed: {{}}\", error),\n            Event{prev}::Done => f.write_str(\"done\"),\n        }}\n    }}\n}}\n",
                    prev = i - 1
                );
            }
            3 => {
                let limit = rng.between(1, 1000);
                let _ = writeln!(
                    out,
                    "pub fn process_{i}<'a, I>(input: I, scale: {ty_num}) -> Result<Vec<(usize, &'a str)>, String>\nwhere\n    I: IntoIterator<Item = &'a str>,\n{{\n    let mut seen: HashMap<&'a str, usize> = HashMap::new();\n    let mut out = Vec::with_capacity({limit});\n    for (index, word) in input.into_iter().enumerate() {{\n        let count = seen.entry(word).or_insert(0);\n        *count += 1;\n        if *count > {limit} {{\n            return Err(format!(\"too many {{}} at {{}}\", word, index));\n        }}\n        let weight = (index as {ty_num}).wrapping_mul(scale) % 7;\n        if weight == 0 || word.starts_with('x') {{\n            out.push((index, word));\n        }} else if let Some(last) = out.last_mut() {{\n            last.0 += word.len();\n        }}\n    }}\n    out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));\n    Ok(out.into_iter().filter(|(n, _)| n % 2 == 0).collect())\n}}\n",
                    ty_num = if i % 2 == 0 { "u64" } else { "usize" }
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "pub trait Store{i}: Send + Sync {{\n    type Key: Eq + std::hash::Hash;\n    fn get(&self, key: &Self::Key) -> Option<{ty}>;\n    fn put(&mut self, key: Self::Key, value: {ty}) -> bool {{\n        let _ = (key, value);\n        false\n    }}\n}}\n\npub const LIMIT_{i}: [u16; 4] = [{}, {}, {}, {}];\n\nmacro_rules! check_{i} {{\n    ($x:expr) => {{ assert!($x < LIMIT_{i}.len(), \"out of range\") }};\n}}\n",
                    rng.next() % 60_000,
                    rng.next() % 60_000,
                    rng.next() % 60_000,
                    rng.next() % 60_000
                );
            }
        }
    }
    out
}

// ---------------------------------------------------------------------
// serde_json
// ---------------------------------------------------------------------

/// Parses a document into a `Value` tree and into derived structs, and
/// prints both back; returns the tree.
#[inline(never)]
fn json_unit(size: &CratesSize, seed: u64) -> serde_json::Value {
    let mut rng = XorShift::new(seed);
    let orders: Vec<Order> = (0..size.json_orders).map(|i| order(i, &mut rng)).collect();
    let text = serde_json::to_string(&orders).expect("orders serialise");
    drop(orders);
    let tree: serde_json::Value =
        serde_json::from_str(&text).expect("serde_json parses its own output");
    let pretty = serde_json::to_string_pretty(&tree).expect("a Value serialises");
    let typed: Vec<Order> =
        serde_json::from_str(&pretty).expect("the pretty text parses into orders");
    let compact = serde_json::to_vec(&typed).expect("orders serialise");
    assert_eq!(
        compact.len(),
        text.len(),
        "the round trip changed the document"
    );
    tree
}

// ---------------------------------------------------------------------
// regex
// ---------------------------------------------------------------------

/// Compiles the patterns and runs each over the log: counts, captures,
/// replacements and splits, the regex crate's everyday calls.
#[inline(never)]
fn regex_unit(size: &CratesSize, seed: u64) {
    let mut rng = XorShift::new(seed);
    let log = log_text(size.regex_lines, &mut rng);
    let mut total = 0usize;
    for index in 0..size.regex_patterns {
        let regex = Regex::new(&pattern(index, &mut rng)).expect("generated patterns compile");
        total += regex.find_iter(&log).count();
        match index % 3 {
            0 => {
                for captures in regex.captures_iter(&log).take(200) {
                    total += captures.iter().flatten().map(|m| m.len()).sum::<usize>();
                }
            }
            1 => total += regex.replace_all(&log, "<$0>").len(),
            _ => total += regex.split(&log).filter(|piece| !piece.is_empty()).count(),
        }
    }
    black_box(total);
}

const WORDS: [&str; 16] = [
    "order", "payment", "user", "session", "cache", "timeout", "retry", "shipping", "invoice",
    "refund", "login", "search", "cart", "stock", "report", "admin",
];

/// Pattern `index`: one of a dozen shapes a program really searches logs
/// with, filled in with words, counts and classes.
fn pattern(index: usize, rng: &mut XorShift) -> String {
    let word = WORDS[rng.next() as usize % WORDS.len()];
    let other = WORDS[rng.next() as usize % WORDS.len()];
    let n = rng.between(1, 4);
    match index % 12 {
        0 => format!(r"\b{word}\w*\b"),
        1 => format!(r"(?i){word}[-_ ]?(id|key|name)"),
        2 => r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})".to_string(),
        3 => format!(r"(?P<key>{word}|{other})=(?P<value>[0-9]{{1,{}}})", n + 2),
        4 => format!(r"user-\d{{{n},{}}}", n + 3),
        5 => r"(GET|POST|PUT|DELETE) (/[a-z0-9]+)+".to_string(),
        6 => format!(r"SKU-[0-9A-F]{{{}}}", 4 + n),
        7 => r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z".to_string(),
        8 => format!(r"(?m)^.*\b{word}\b.*{other}.*$"),
        9 => format!(r"took=(\d+)ms.*\b(?:{word}|{other}|timeout)\b"),
        10 => format!(r"[a-z]+@[a-z]+\.(com|org|net)|{word}\d+"),
        _ => format!(r"(?x) status= (?P<status> [45] \d\d ) \s+ \w+={word}"),
    }
}

/// Access-log-like lines: timestamps, methods, paths, users, addresses,
/// key=value fields and free text.
fn log_text(lines: usize, rng: &mut XorShift) -> String {
    const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
    let mut out = String::new();
    for line in 0..lines {
        let word = WORDS[rng.next() as usize % WORDS.len()];
        let _ = writeln!(
            out,
            "2026-11-{:02}T{:02}:{:02}:{:02}Z {} /api/{word}/{} user-{} ip=10.{}.{}.{} status={} {word}={} took={}ms \
             sku=SKU-{:08X} mail={word}@example.{} msg=\"{} {word} {} after retry {}\"",
            1 + line % 28,
            rng.next() % 24,
            rng.next() % 60,
            rng.next() % 60,
            METHODS[rng.next() as usize % 4],
            rng.next() % 1000,
            rng.next() % 100_000,
            rng.next() % 256,
            rng.next() % 256,
            rng.next() % 256,
            [200, 201, 304, 404, 500, 503][rng.next() as usize % 6],
            rng.next() % 10_000,
            rng.next() % 2000,
            rng.next() as u32,
            ["com", "org", "net"][rng.next() as usize % 3],
            WORDS[rng.next() as usize % WORDS.len()],
            WORDS[rng.next() as usize % WORDS.len()],
            rng.next() % 5,
        );
    }
    out
}
