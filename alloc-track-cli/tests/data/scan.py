#!/usr/bin/env python3
"""Writes scan.1.json and scan.2.json: two dumps of a small `scan-tool`
program that show what issue 12 is about. Run from this directory.

- `load_profile` is called from two lines of `main` (stacks that differ only
  in a caller's line); in the second dump only one caller remains.
- a library-internal leaf (`regex_automata`) reached from the user's
  `scan_tool::scan::scan_file` through `regex::Regex::new`;
- a stack that never reaches user code (the Rust runtime's start-up);
- the catch-all site of a full stack table (an empty stack);
- a truncated stack ending in a generic user function.
"""
import json

RUSTC = "/rustc/90b35a6239c3d8bdabc530a6a0816f7ff89a0aaf/library"
APP = "/home/u/scan-tool/src"
REG = "/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f"


def f(function, file=None, line=None):
    frame = {"function": function}
    if file:
        frame["file"] = file
    if line:
        frame["line"] = line
    return frame


LOCATIONS = [
    # 0: the allocation, inlined into Vec::push
    [f("alloc::raw_vec::RawVec<T,A>::grow_one", f"{RUSTC}/alloc/src/raw_vec.rs", 567),
     f("alloc::vec::Vec<T,A>::push", f"{RUSTC}/alloc/src/vec/mod.rs", 2417)],
    [f("scan_tool::load_profile", f"{APP}/profile.rs", 60)],  # 1
    [f("scan_tool::main", f"{APP}/main.rs", 10)],  # 2
    [f("scan_tool::main", f"{APP}/main.rs", 12)],  # 3
    [f("core::ops::function::FnOnce::call_once", f"{RUSTC}/core/src/ops/function.rs", 250),
     f("std::sys::backtrace::__rust_begin_short_backtrace", f"{RUSTC}/std/src/sys/backtrace.rs", 152)],  # 4
    [f("std::rt::lang_start::{{closure}}", f"{RUSTC}/std/src/rt.rs", 206),
     f("std::rt::lang_start_internal", f"{RUSTC}/std/src/rt.rs", 175)],  # 5
    [f("main")],  # 6
    [f("regex_automata::util::sparse_set::SparseSet::new",
       f"{REG}/regex-automata-0.4.9/src/util/sparse_set.rs", 40)],  # 7
    [f("regex::regex::string::Regex::new", f"{REG}/regex-1.11.1/src/regex/string.rs", 180)],  # 8
    [f("scan_tool::scan::scan_file", f"{APP}/scan.rs", 33)],  # 9
    [f("std::thread::Thread::new", f"{RUSTC}/std/src/thread/mod.rs", 1400)],  # 10
    [f("std::rt::init", f"{RUSTC}/std/src/rt.rs", 100)],  # 11
    [f("<scan_tool::stats::Table<K,V> as core::iter::traits::collect::Extend<(K,V)>>::extend",
       f"{APP}/stats.rs", 20)],  # 12
    [f("scan_tool::main", f"{APP}/main.rs", 14)],  # 13
    [f("scan_tool::report::print", f"{APP}/report.rs", 5)],  # 14
]

STACKS = [
    {"locations": [0, 1, 2, 4, 5, 6]},  # 0: load_profile from main:10
    {"locations": [0, 1, 3, 4, 5, 6]},  # 1: load_profile from main:12
    {"locations": [7, 8, 9, 13, 4, 5, 6]},  # 2: regex internals under scan_file
    {"locations": [0, 10, 11, 5, 6]},  # 3: the runtime's own start-up
    {"locations": []},  # 4: the stack table's catch-all
    {"locations": [0, 12], "truncated": True},  # 5: a truncated stack
    {"locations": [0, 14, 13, 4, 5, 6]},  # 6: two more user sites
    {"locations": [0, 9, 13, 4, 5, 6]},  # 7
]


def dump(timestamp_ms, epoch, sites, peak=()):
    sites = [{"stack": s, "live_bytes": lb, "live_blocks": lk,
              "total_bytes": tb, "total_blocks": tk} for s, lb, lk, tb, tk in sites]
    totals = {k: sum(s[k] for s in sites)
              for k in ["live_bytes", "live_blocks", "total_bytes", "total_blocks"]}
    totals["peak_bytes"] = totals["live_bytes"] + 100_000
    extra = {}
    if peak:
        extra["peak_sites"] = [{"stack": s, "bytes": b, "blocks": k} for s, b, k in peak]
    return extra | {
        "format": "alloc-track-dump", "version": 1, "program": "scan-tool", "pid": 777,
        "timestamp_ms": timestamp_ms, "mode": "full", "stack_walker": "frame-pointers",
        "epoch": epoch, "totals": totals, "os": {"rss_bytes": 4_000_000},
        "locations": [{"address": 0x5000 + 0x40 * i, "frames": frames}
                      for i, frames in enumerate(LOCATIONS)],
        "stacks": STACKS, "sites": sites,
    }


FIRST = dump(1764042000000, 1, [
    (0, 400_000, 2, 800_000, 4),
    (1, 282_000, 1, 282_000, 1),
    (2, 100_000, 10, 300_000, 30),
    (3, 544, 1, 544, 1),
    (4, 4096, 3, 8192, 6),
    (5, 2048, 4, 2048, 4),
    (6, 1000, 1, 1000, 1),
    (7, 900, 1, 900, 1),
], peak=[(0, 400_000, 2), (1, 282_000, 1), (2, 100_000, 10), (3, 544, 1), (4, 4096, 3),
         (5, 2048, 4), (6, 1000, 1), (7, 900, 1)])
SECOND = dump(1764042060000, 2, [
    (1, 700_000, 3, 1_100_000, 5),
    (2, 110_000, 11, 410_000, 41),
    (3, 544, 1, 544, 1),
    (4, 4096, 3, 8192, 6),
    (5, 4096, 8, 4096, 8),
])

for name, value in [("scan.1.json", FIRST), ("scan.2.json", SECOND)]:
    with open(name, "w") as out:
        json.dump(value, out, indent=1)
        out.write("\n")
