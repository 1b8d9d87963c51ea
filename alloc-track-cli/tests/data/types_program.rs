// The program `tests/by_type.rs` compiles (v0 and legacy symbol mangling)
// and reports on: known numbers of live blocks of known types, and a
// loop of temporary allocations.
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: alloc_track::Tracker<std::alloc::System> =
    alloc_track::Tracker::new(std::alloc::System);

pub struct Node {
    pub value: u64,
    pub next: Option<Box<Node>>,
}
pub struct Widget {
    pub id: u32,
    pub weight: u64,
}
pub struct Session {
    pub id: u64,
}
pub struct Item {
    pub payload: [u8; 40],
}

#[inline(never)]
fn hold() -> impl Sized {
    let mut nodes = Vec::with_capacity(10);
    for value in 0..10 {
        nodes.push(Box::new(Node { value, next: None }));
    }
    let mut buffers = Vec::with_capacity(7);
    for id in 0..7 {
        let mut buffer: Vec<Widget> = Vec::with_capacity(4);
        buffer.push(Widget { id, weight: 1 });
        buffers.push(buffer);
    }
    let mut sessions = Vec::with_capacity(5);
    for id in 0..5 {
        sessions.push(Arc::new(Session { id }));
    }
    let mut names = Vec::with_capacity(4);
    for _ in 0..4 {
        let mut name = String::with_capacity(16);
        name.push_str("session");
        names.push(name);
    }
    let mut items: HashMap<u64, Item> = HashMap::with_capacity(3);
    for key in 0..3 {
        items.insert(key, Item { payload: [0; 40] });
    }
    (nodes, buffers, sessions, names, items)
}

#[inline(never)]
fn churn() {
    for round in 0..250u64 {
        black_box(Box::new(Node {
            value: round,
            next: None,
        }));
    }
}

fn main() {
    let held = black_box(hold());
    churn();
    let path = std::env::args().nth(1).expect("dump path");
    alloc_track::snapshot().save(&path).expect("save");
    drop(held);
}
