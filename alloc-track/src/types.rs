//! What kind of object a block is, read from the names of the standard
//! library frames that allocated it: a Rust allocation carries no runtime
//! type, but its stack does. `Box::<Node>::new` allocated a `Node`,
//! `Vec::<Widget>::push` a buffer of `Widget`s, `Box::<ArcInner<Session>>`
//! under `Arc::<Session>::new` an `Arc<Session>`, hashbrown's
//! `RawTable<(u64, Item)>` the table of a `HashMap<u64, Item>`, a B-tree's
//! `LeafNode<K, V>` a node of a `BTreeMap<K, V>`.
//!
//! Cold path only: this reads resolved frame names, at snapshot, dump or
//! report time, never while allocating.
//!
//! # Which build shows types
//!
//! Generic functions are compiled (monomorphised) in the crate that uses
//! them, and named by that crate's symbol mangling:
//!
//! - **v0 mangling** (`-C symbol-mangling-version=v0`, stable) keeps the
//!   concrete arguments: `<alloc::boxed::Box<app::Node>>::new`. Any debug
//!   info level that names functions keeps them, inlined frames included
//!   (`debug = "limited"` is enough). Build with
//!   `RUSTFLAGS="-C symbol-mangling-version=v0"`.
//! - **Legacy mangling** (the default for your crates) erases them:
//!   `alloc::boxed::Box<T>::new`. The container is still told (`Box`,
//!   `Vec`, `Arc`...), and `String` is always exact (it is not generic),
//!   but the element type is not: the type reads
//!   `[unknown Box: allocated in app::load]`.
//!
//! The standard library's own monomorphisations (its internal maps and
//! buffers) are named by how std was built, v0 on current toolchains.

use std::collections::HashMap;
use std::fmt;

use crate::dump::Frame;
use crate::hot::view::thread::untracked;
use crate::Snapshot;

/// The kind of container that owns a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Container {
    /// `Box<T>`: the block is one `T`.
    Box,
    /// `Vec<T>` (and anything built on it): a buffer of `T`s.
    Vec,
    /// `Arc<T>`: one `T` with its reference counts.
    Arc,
    /// `Rc<T>`: one `T` with its reference counts.
    Rc,
    /// `HashMap<K, V>` or `HashSet<K>`: the table of entries.
    HashMap,
    /// `BTreeMap<K, V>` or `BTreeSet<K>`: one node.
    BTreeMap,
    /// `String`: its bytes.
    String,
}

impl Container {
    /// The container's name as written in Rust.
    pub fn name(self) -> &'static str {
        match self {
            Container::Box => "Box",
            Container::Vec => "Vec",
            Container::Arc => "Arc",
            Container::Rc => "Rc",
            Container::HashMap => "HashMap",
            Container::BTreeMap => "BTreeMap",
            Container::String => "String",
        }
    }
}

/// What a site's blocks are, as far as its frames tell.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocatedType {
    /// The container, when a standard-library frame names one.
    pub container: Option<Container>,
    /// Its type arguments as written (`app::Node`; `u64, app::Item` for a
    /// map), when the build keeps them (see the module docs); `None` for
    /// `String` and for erased names.
    pub element: Option<String>,
    /// The first function outside the standard library: where the block
    /// was allocated, for types that cannot be told.
    pub allocated_in: Option<String>,
}

impl AllocatedType {
    /// True when both the container and its element type are known (or
    /// the container is `String`, which has none).
    pub fn is_known(&self) -> bool {
        match self.container {
            Some(Container::String) => true,
            Some(_) => self.element.is_some(),
            None => false,
        }
    }
}

impl fmt::Display for AllocatedType {
    /// `Box<app::Node>`, `HashMap<u64, app::Item>`, `String`; when the
    /// element is not known, `[unknown Box: allocated in app::load]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.container, &self.element) {
            (Some(Container::String), _) => f.write_str("String"),
            (Some(container), Some(element)) => write!(f, "{}<{element}>", container.name()),
            (container, _) => {
                f.write_str("[unknown")?;
                if let Some(container) = container {
                    write!(f, " {}", container.name())?;
                }
                match &self.allocated_in {
                    Some(function) => write!(f, ": allocated in {function}]"),
                    None => f.write_str("]"),
                }
            }
        }
    }
}

/// The type of the blocks allocated by a stack whose resolved frames are
/// `frames`, innermost first, the allocator's own frames trimmed (as
/// [`Stack::frames`](crate::Stack::frames) and dumps give them).
///
/// The innermost standard-library frame that names a container with
/// concrete arguments decides; `Box<ArcInner<T>>` is an `Arc<T>`,
/// `Box<RcInner<T>>` an `Rc<T>`, `Box<LeafNode<K, V>>` a `BTreeMap`
/// node, a `Vec<u8>` grown under a `String` method a `String`. Without a
/// concrete name, the outermost erased one tells the container.
pub fn allocated_type<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> AllocatedType {
    let mut frames = frames.into_iter().peekable();
    let mut library: Vec<&Frame> = Vec::new();
    while let Some(frame) = frames.next_if(|f| f.is_standard_library()) {
        library.push(frame);
    }
    let allocated_in = frames.next().map(|f| f.function.clone());
    let under_string = |from: usize| library[from..].iter().any(|f| string_method(&f.function));
    let mut erased: Option<Container> = None;
    for (index, frame) in library.iter().enumerate() {
        if string_method(&frame.function) {
            return found(Container::String, None, allocated_in);
        }
        let Some((container, element)) = container_of(&frame.function) else {
            continue;
        };
        match element {
            Some(element)
                if container == Container::Vec && element == "u8" && under_string(index) =>
            {
                return found(Container::String, None, allocated_in);
            }
            Some(element) => return found(container, Some(element), allocated_in),
            None => erased = Some(container),
        }
    }
    AllocatedType {
        container: erased,
        element: None,
        allocated_in,
    }
}

fn found(
    container: Container,
    element: Option<String>,
    allocated_in: Option<String>,
) -> AllocatedType {
    let (container, element) = match (container, element) {
        (Container::Box, Some(inner)) => unwrap_box(inner),
        other => other,
    };
    AllocatedType {
        container: Some(container),
        element: element.map(|e| tidy(&e)),
        allocated_in,
    }
}

/// `Box<ArcInner<T>>` is what `Arc::new` allocates, and so on.
fn unwrap_box(inner: String) -> (Container, Option<String>) {
    const INNER: &[(&str, Container)] = &[
        ("alloc::sync::ArcInner<", Container::Arc),
        ("alloc::rc::RcInner<", Container::Rc),
        ("alloc::rc::RcBox<", Container::Rc),
        (
            "alloc::collections::btree::node::LeafNode<",
            Container::BTreeMap,
        ),
        (
            "alloc::collections::btree::node::InternalNode<",
            Container::BTreeMap,
        ),
    ];
    for (prefix, container) in INNER {
        if let Some(args) = inner
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix('>'))
        {
            return (*container, Some(args.to_string()));
        }
    }
    (Container::Box, Some(inner))
}

/// Methods of `String` (and the conversions that make one from a `str`).
fn string_method(function: &str) -> bool {
    let function = function.strip_prefix('<').unwrap_or(function);
    function.starts_with("alloc::string::String")
        || function.starts_with("str as alloc::string::ToString>")
        || function.starts_with("str as alloc::borrow::ToOwned>")
        || function.starts_with("alloc::fmt::format")
}

/// The self type of each container's methods, as the demangler writes it.
const CONTAINERS: &[(&str, Container)] = &[
    ("alloc::boxed::Box<", Container::Box),
    ("alloc::vec::Vec<", Container::Vec),
    ("alloc::sync::Arc<", Container::Arc),
    ("alloc::rc::Rc<", Container::Rc),
    ("hashbrown::raw::RawTable<", Container::HashMap),
    ("hashbrown::map::HashMap<", Container::HashMap),
    ("std::collections::hash::map::HashMap<", Container::HashMap),
    ("hashbrown::set::HashSet<", Container::HashMap),
    ("std::collections::hash::set::HashSet<", Container::HashMap),
    (
        "alloc::collections::btree::node::LeafNode<",
        Container::BTreeMap,
    ),
    (
        "alloc::collections::btree::node::InternalNode<",
        Container::BTreeMap,
    ),
    (
        "alloc::collections::btree::map::BTreeMap<",
        Container::BTreeMap,
    ),
];

/// The container a function is a method of, with its arguments when they
/// are concrete (`None` when the name erased them: `Box<T>`, `Vec<T,A>`).
fn container_of(function: &str) -> Option<(Container, Option<String>)> {
    let self_type = function.strip_prefix('<').unwrap_or(function);
    let (prefix, container) = CONTAINERS
        .iter()
        .find(|(prefix, _)| self_type.starts_with(prefix))?;
    let args = generic_args(&self_type[prefix.len()..])?;
    if args.iter().all(|arg| is_type_parameter(arg)) {
        return Some((*container, None));
    }
    let element = match (container, prefix.contains("RawTable")) {
        // A table of `(K, V)` pairs is a map; of `(K, ())`, a set.
        (Container::HashMap, true) => {
            let pair = args[0].trim();
            let inner = pair
                .strip_prefix('(')
                .and_then(|p| p.strip_suffix(')'))
                .unwrap_or(pair);
            inner.strip_suffix(", ()").unwrap_or(inner).to_string()
        }
        // A map's hasher (`HashMap<K, V, S>`) is not part of its type here.
        (Container::HashMap, false) if args.len() > 2 => args[..2].join(", "),
        // A `Vec<T, A>`'s allocator, likewise.
        (Container::Vec | Container::Box | Container::Arc | Container::Rc, _) => args[0].clone(),
        _ => args.join(", "),
    };
    Some((*container, Some(element)))
}

/// The top-level arguments of `T, U<V>>...` up to the closing `>`.
fn generic_args(text: &str) -> Option<Vec<String>> {
    let mut depth = 0usize;
    let mut args = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            '>' if depth == 0 => {
                args.push(text[start..i].trim().to_string());
                return Some(args);
            }
            '>' => depth -= 1,
            ',' if depth == 0 => {
                args.push(text[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    None
}

/// A generic parameter as legacy-mangled names print it: `T`, `K`, `A`.
fn is_type_parameter(arg: &str) -> bool {
    let mut chars = arg.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_digit())
}

/// Shortens the standard library's paths inside a type (`alloc::string::
/// String` to `String`); the program's own paths stay whole.
fn tidy(type_name: &str) -> String {
    const SHORTEN: &[&str] = &[
        "alloc::string::",
        "alloc::vec::",
        "alloc::boxed::",
        "alloc::sync::",
        "alloc::rc::",
        "alloc::collections::btree::map::",
        "std::collections::hash::map::",
        "core::option::",
        "core::cell::",
    ];
    let mut out = type_name.to_string();
    for prefix in SHORTEN {
        out = out.replace(prefix, "");
    }
    out
}

/// The live heap of one type in a [`Snapshot`]: see [`Snapshot::by_type`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeStats {
    /// The type (or what is known of it).
    pub allocated_type: AllocatedType,
    /// Bytes of this type allocated and still live.
    pub live_bytes: u64,
    /// Blocks of this type allocated and still live.
    pub live_blocks: u64,
    /// Bytes of this type allocated since tracking began.
    pub total_bytes: u64,
    /// Blocks of this type allocated since tracking began.
    pub total_blocks: u64,
    /// Indices into [`Snapshot::sites`] of the sites that allocated it,
    /// the most live bytes first.
    pub sites: Vec<usize>,
}

impl Snapshot {
    /// The live heap by the type of object that holds it, the most live
    /// bytes first (types with nothing live last): objgraph's "most common
    /// types" for Rust. Each site's type is read from its stack's frame
    /// names (see [`allocated_type`] and the [module docs](self) for the
    /// build that keeps element types: v0 symbol mangling). Resolves every
    /// site's stack, so it costs what symbolizing them costs.
    pub fn by_type(&self) -> Vec<TypeStats> {
        untracked(|| {
            let mut index: HashMap<AllocatedType, usize> = HashMap::new();
            let mut out: Vec<TypeStats> = Vec::new();
            for (row, site) in self.sites().iter().enumerate() {
                let allocated_type = allocated_type(&site.stack().frames());
                let slot = *index.entry(allocated_type.clone()).or_insert_with(|| {
                    out.push(TypeStats {
                        allocated_type,
                        live_bytes: 0,
                        live_blocks: 0,
                        total_bytes: 0,
                        total_blocks: 0,
                        sites: Vec::new(),
                    });
                    out.len() - 1
                });
                let stats = &mut out[slot];
                stats.live_bytes += site.live_bytes();
                stats.live_blocks += site.live_blocks();
                stats.total_bytes += site.total_bytes();
                stats.total_blocks += site.total_blocks();
                stats.sites.push(row);
            }
            for stats in &mut out {
                let sites = self.sites();
                stats
                    .sites
                    .sort_by_key(|&row| std::cmp::Reverse(sites[row].live_bytes()));
            }
            out.sort_by(|a, b| {
                (b.live_bytes, b.live_blocks, b.total_bytes)
                    .cmp(&(a.live_bytes, a.live_blocks, a.total_bytes))
                    .then_with(|| a.allocated_type.cmp(&b.allocated_type))
            });
            out
        })
    }
}

#[cfg(test)]
mod tests;
