//! "Your code": the program's own crate, and the first frame of a stack
//! that is in it. On real programs the allocating site is often a
//! library's internals (`regex_automata::…::SparseSet::new`); the user's
//! own call that led there (`scan_tool::scan::scan_file`) is what they can
//! change.
//!
//! The program's crate is found from the dump: the program's name as a
//! crate name (`scan-tool` is `scan_tool`; a test binary's `-<hash>`
//! suffix dropped) when frames of that crate are in the dump, else the
//! crate of the function the Rust runtime calls as `main` (the frame just
//! inside `std::rt::lang_start`). `--crate NAME` overrides both.

use alloc_track::dump::{Dump, Frame};

use crate::stacks::{self, FrameRef};

/// Where the program's crate name came from, for the report to say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrateSource {
    /// Given with `--crate`.
    Given,
    /// The program's file name.
    ProgramName,
    /// The crate of the function the runtime calls as `main`.
    MainFunction,
}

/// The program's own crate, or `None` when the dump does not tell
/// (no frame of the program's name, no `main` reached from the runtime).
pub fn program_crate(dump: &Dump, given: Option<&str>) -> Option<(String, CrateSource)> {
    if let Some(name) = given {
        return Some((name.replace('-', "_"), CrateSource::Given));
    }
    let from_name = crate_name_of_program(&dump.program);
    let frames = || dump.locations.iter().flat_map(|l| l.frames.iter());
    if frames().any(|f| crates_of(&f.function).contains(&from_name.as_str())) {
        return Some((from_name, CrateSource::ProgramName));
    }
    for stack in &dump.stacks {
        let mut inner: Option<&Frame> = None;
        for frame in stacks::frames_leaf_first(dump, stack) {
            let FrameRef::Resolved(frame) = frame else {
                continue;
            };
            if is_runtime_entry(&frame.function) {
                if let Some(main) = inner.and_then(|f| crates_of(&f.function).first().copied()) {
                    return Some((main.to_string(), CrateSource::MainFunction));
                }
                break;
            }
            if !frame.is_standard_library() {
                inner = Some(frame);
            }
        }
    }
    None
}

/// The frames through which the Rust runtime calls the program's `main`.
fn is_runtime_entry(function: &str) -> bool {
    function.contains("__rust_begin_short_backtrace") || function.starts_with("std::rt::lang_start")
}

/// `scan-tool` gives `scan_tool`; `my_tests-0123456789abcdef` (a test
/// binary) gives `my_tests`; `app.exe` gives `app`.
pub fn crate_name_of_program(program: &str) -> String {
    let name = program.strip_suffix(".exe").unwrap_or(program);
    let name = match name.rsplit_once('-') {
        Some((stem, hash))
            if !stem.is_empty()
                && hash.len() == 16
                && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            stem
        }
        _ => name,
    };
    name.replace('-', "_")
}

/// The crates a function belongs to, most specific first: the first path
/// segment of `crate::module::f`, and for `<Type as Trait>::f` the type's
/// crate then the trait's (a user's impl of their trait for `[u8; 32]` or
/// `Vec<T>` is theirs).
pub fn crates_of(function: &str) -> Vec<&str> {
    let mut crates = Vec::new();
    let Some(qualified) = function.strip_prefix('<') else {
        crates.extend(first_segment(function));
        return crates;
    };
    crates.extend(first_segment(qualified));
    if let Some(as_at) = top_level_as(qualified) {
        crates.extend(first_segment(&qualified[as_at + 4..]));
    }
    crates
}

/// The leading crate name of a path, skipping `&`, `&mut ` and `dyn `.
fn first_segment(path: &str) -> Option<&str> {
    let mut path = path.trim_start();
    for prefix in ["&mut ", "&", "*const ", "*mut ", "dyn "] {
        if let Some(rest) = path.strip_prefix(prefix) {
            path = rest.trim_start();
        }
    }
    let end = path
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(path.len());
    let segment = &path[..end];
    (!segment.is_empty() && path[end..].starts_with("::")).then_some(segment)
}

/// The byte offset of ` as ` at nesting depth 0 in `Type as Trait>::f`.
fn top_level_as(text: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in text.char_indices() {
        match c {
            '<' | '[' | '(' => depth += 1,
            '>' if depth == 0 => return None,
            '>' | ']' | ')' => depth -= 1,
            ' ' if depth == 0 && text[i..].starts_with(" as ") => return Some(i),
            _ => {}
        }
    }
    None
}

/// The first frame of stack `stack`, from the allocating end, that belongs
/// to crate `name`.
pub fn first_frame_in<'d>(dump: &'d Dump, stack: u32, name: &str) -> Option<&'d Frame> {
    let stack = stacks::stack(dump, stack)?;
    stacks::frames_leaf_first(dump, stack)
        .filter_map(|f| f.frame())
        .find(|f| !f.is_standard_library() && crates_of(&f.function).contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crates_of_plain_and_qualified_paths() {
        assert_eq!(crates_of("scan_tool::scan::scan_file"), ["scan_tool"]);
        assert_eq!(
            crates_of("<scan_tool::stats::Table<K,V> as core::iter::Extend<(K,V)>>::extend"),
            ["scan_tool", "core"]
        );
        assert_eq!(
            crates_of("<[u8; 32] as demo_app::hash::Digest>::finish"),
            ["demo_app"]
        );
        assert_eq!(
            crates_of("<&mut app::X as core::fmt::Debug>::fmt"),
            ["app", "core"]
        );
        assert!(crates_of("main").is_empty());
        assert!(crates_of("0x1234").is_empty());
    }

    #[test]
    fn program_names_become_crate_names() {
        assert_eq!(crate_name_of_program("scan-tool"), "scan_tool");
        assert_eq!(crate_name_of_program("cli-0123456789abcdef"), "cli");
        assert_eq!(crate_name_of_program("app.exe"), "app");
        assert_eq!(crate_name_of_program("v-2"), "v_2");
    }
}
