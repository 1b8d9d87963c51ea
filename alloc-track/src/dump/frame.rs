//! What every reader of a dump asks of a frame: is it the standard
//! library's, and how is it shown in one line. Defined here, beside the
//! type, so the tracker's tables and the CLI's agree.

use std::path::Path;

use super::Frame;

/// The label of a whole stack none of whose frames leaves the standard
/// library: it never reached the program (the runtime's start-up and
/// thread bookkeeping).
pub const RUNTIME_LABEL: &str = "[Rust runtime]";

/// The label of the catch-all site, whose stack is empty: what was
/// allocated after the stack table filled up.
pub const OVERFLOW_LABEL: &str = "[other: stack table full]";

/// Functions that are never the answer to "who allocated this": the
/// standard library (`std`, `core`, `alloc`, the `hashbrown` it vendors)
/// and the allocator plumbing (global-allocator shims, this tracker).
/// Consulted by name only when the frame has no file to tell.
const STD_FUNCTION_PREFIXES: &[&str] = &[
    "std::",
    "core::",
    "alloc::",
    "<std::",
    "<core::",
    "<alloc::",
    "hashbrown::",
    "<hashbrown::",
];

/// Recognised by name whatever the file says: the allocator plumbing, and
/// `hashbrown`, which is std's `HashMap` even when a program also depends
/// on it directly (its frames then point into the user's registry).
const PLUMBING_PREFIXES: &[&str] = &[
    "__rust",
    "__rdl_",
    "__rg_",
    "alloc_track::",
    "<alloc_track::",
    "hashbrown::",
    "<hashbrown::",
];

/// The C runtime's entry points (and rustc's `main` shim): the bottom of
/// every stack, never the answer. Matched by exact name.
const C_RUNTIME: &[&str] = &[
    "main",
    "_start",
    "__libc_start_main",
    "__libc_start_main_impl",
    "__libc_start_call_main",
    "start_thread",
    "clone",
    "clone3",
];

impl Frame {
    /// True for frames of Rust's standard library or the allocator
    /// plumbing, rarely the place to fix a leak.
    ///
    /// A frame with a file is judged by it: the compiler records its own
    /// sources under `/rustc/<hash>/`, and std's vendored dependencies under
    /// `/rust/deps/` (newer toolchains) or `/cargo/registry/` (older ones;
    /// a user's own `~/.cargo/registry` crates do not match). A frame
    /// without a file is judged by its function's path. That way a user's
    /// `impl Trait for Vec<T>` (`<alloc::vec::Vec<T> as my::Trait>::f`)
    /// in the user's file is not mistaken for std.
    pub fn is_standard_library(&self) -> bool {
        if PLUMBING_PREFIXES
            .iter()
            .any(|p| self.function.starts_with(p))
            || C_RUNTIME.contains(&self.function.as_str())
        {
            return true;
        }
        match &self.file {
            Some(file) => {
                file.starts_with("/rustc/")
                    || file.starts_with("/rust/deps/")
                    || file.contains("/cargo/registry/")
            }
            None => STD_FUNCTION_PREFIXES
                .iter()
                .any(|p| self.function.starts_with(p)),
        }
    }

    /// `function (file:line)`, with the file shown relative to
    /// `relative_to` when it lies below it.
    ///
    /// ```
    /// use alloc_track::dump::Frame;
    /// use std::path::Path;
    /// let frame = Frame {
    ///     function: "app::cache::insert".into(),
    ///     file: Some("/home/me/app/src/cache.rs".into()),
    ///     line: Some(42),
    ///     column: None,
    /// };
    /// assert_eq!(frame.label(Some(Path::new("/home/me/app"))), "app::cache::insert (src/cache.rs:42)");
    /// assert_eq!(frame.label(None), "app::cache::insert (/home/me/app/src/cache.rs:42)");
    /// ```
    pub fn label(&self, relative_to: Option<&Path>) -> String {
        let Some(file) = &self.file else {
            return self.function.clone();
        };
        let shown = relative_to
            .and_then(|base| Path::new(file).strip_prefix(base).ok())
            .filter(|relative| !relative.as_os_str().is_empty())
            .map_or_else(|| file.clone(), |relative| relative.display().to_string());
        match self.line {
            Some(line) => format!("{} ({shown}:{line})", self.function),
            None => format!("{} ({shown})", self.function),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: Option<&str>) -> Frame {
        Frame {
            function: function.into(),
            file: file.map(Into::into),
            line: Some(1),
            column: None,
        }
    }

    #[test]
    fn standard_library_by_file_then_by_name() {
        let std_file = "/rustc/59807616e1fa/library/alloc/src/vec/mod.rs";
        assert!(frame("alloc::vec::Vec<T>::push", Some(std_file)).is_standard_library());
        assert!(frame(
            "hashbrown::raw::alloc",
            Some("/rust/deps/hashbrown-0.16.1/src/raw.rs")
        )
        .is_standard_library());
        assert!(frame("alloc::vec::Vec<T>::push", None).is_standard_library());
        assert!(frame("__rustc::__rust_alloc", Some("src/main.rs")).is_standard_library());
        // A user's impl on a std type, in the user's file, is the user's.
        assert!(!frame(
            "<alloc::vec::Vec<T> as app::Fill>::fill",
            Some("/app/src/fill.rs")
        )
        .is_standard_library());
        // A user's dependency from crates.io is not std.
        let dependency =
            "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/serde_json-1.0/src/de.rs";
        assert!(!frame("serde_json::de::from_str", Some(dependency)).is_standard_library());
        assert!(!frame("app::main", None).is_standard_library());
        assert!(frame("main", None).is_standard_library());
        assert!(frame("start_thread", Some("./nptl/pthread_create.c")).is_standard_library());
    }

    #[test]
    fn labels_shorten_only_paths_below_the_base() {
        let f = frame("app::f", Some("/a/b/src/x.rs"));
        assert_eq!(f.label(Some(Path::new("/a/b"))), "app::f (src/x.rs:1)");
        assert_eq!(
            f.label(Some(Path::new("/a/bc"))),
            "app::f (/a/b/src/x.rs:1)"
        );
        assert_eq!(frame("app::f", None).label(None), "app::f");
    }
}
