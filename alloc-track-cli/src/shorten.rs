//! Shorter labels: generic arguments folded to `<…>` (heaptrack does the
//! same by default), and the compiler's `/rustc/<commit hash>/` prefix cut
//! to `/rustc/…/`. `--full-names` keeps both whole.

use std::borrow::Cow;

use alloc_track::dump::Frame;

/// `alloc::raw_vec::RawVec<T,A>::grow_one` gives
/// `alloc::raw_vec::RawVec<…>::grow_one`; `<Vec<u8> as Clone>::clone` gives
/// `<Vec<…> as Clone>::clone`: a `<` right after a name (or a turbofish
/// `::<`) opens generic arguments, folded with everything nested in them,
/// while a `<` that opens a qualified path (`<Type as Trait>`) is kept.
pub fn shorten_generics(name: &str) -> Cow<'_, str> {
    if !name.contains('<') {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.char_indices().peekable();
    let mut previous: Option<char> = None;
    while let Some((_, c)) = chars.next() {
        let opens_generics = c == '<'
            && previous.is_some_and(|p| p.is_alphanumeric() || p == '_' || p == ':' || p == '>');
        if !opens_generics {
            out.push(c);
            previous = Some(c);
            continue;
        }
        // Skip to the matching `>`, ignoring the `>` of `->`.
        let mut depth = 1usize;
        let mut last = c;
        for (_, inner) in chars.by_ref() {
            match inner {
                '<' => depth += 1,
                '>' if last != '-' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            last = inner;
        }
        out.push_str("<…>");
        previous = Some('>');
    }
    Cow::Owned(out)
}

/// `/rustc/90b35a6239c3d8bdabc530a6a0816f7ff89a0aaf/library/alloc/src/x.rs`
/// gives `/rustc/…/library/alloc/src/x.rs`; a crate from the registry,
/// `~/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/regex-1.11.1/src/x.rs`,
/// gives `…/regex-1.11.1/src/x.rs`.
pub fn shorten_path(file: &str) -> Cow<'_, str> {
    const REGISTRY: &str = "/.cargo/registry/src/";
    if let Some(at) = file.find(REGISTRY) {
        let after_index = file[at + REGISTRY.len()..].split_once('/');
        if let Some((_, in_crate)) = after_index {
            return Cow::Owned(format!("…/{in_crate}"));
        }
    }
    let Some(rest) = file.strip_prefix("/rustc/") else {
        return Cow::Borrowed(file);
    };
    match rest.split_once('/') {
        Some((hash, tail)) if hash.len() >= 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Cow::Owned(format!("/rustc/…/{tail}"))
        }
        _ => Cow::Borrowed(file),
    }
}

/// The frame with its name and file shortened.
pub fn shorten_frame(frame: &Frame) -> Frame {
    Frame {
        function: shorten_generics(&frame.function).into_owned(),
        file: frame.file.as_deref().map(|f| shorten_path(f).into_owned()),
        line: frame.line,
        column: frame.column,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_arguments_fold_and_qualified_paths_stay() {
        assert_eq!(
            shorten_generics("alloc::raw_vec::RawVec<T,A>::grow_one"),
            "alloc::raw_vec::RawVec<…>::grow_one"
        );
        assert_eq!(
            shorten_generics("<scan_tool::Table<K,V> as core::iter::Extend<(K,V)>>::extend"),
            "<scan_tool::Table<…> as core::iter::Extend<…>>::extend"
        );
        assert_eq!(
            shorten_generics("<[u8; 32] as app::Digest>::finish"),
            "<[u8; 32] as app::Digest>::finish"
        );
        assert_eq!(
            shorten_generics("core::iter::Map<I,F>::fold::<Box<dyn Fn(u8) -> u8>>"),
            "core::iter::Map<…>::fold::<…>"
        );
        assert_eq!(
            shorten_generics("app::main::{{closure}}"),
            "app::main::{{closure}}"
        );
        // Unbalanced input never panics.
        assert_eq!(shorten_generics("a::B<C"), "a::B<…>");
    }

    #[test]
    fn compiler_paths_lose_their_hash() {
        assert_eq!(
            shorten_path("/rustc/90b35a6239c3d8bdabc530a6a0816f7ff89a0aaf/library/alloc/src/a.rs"),
            "/rustc/…/library/alloc/src/a.rs"
        );
        assert_eq!(shorten_path("/home/u/src/a.rs"), "/home/u/src/a.rs");
        assert_eq!(
            shorten_path(
                "/h/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/regex-1.1/src/a.rs"
            ),
            "…/regex-1.1/src/a.rs"
        );
        assert_eq!(shorten_path("/rustc/short/x.rs"), "/rustc/short/x.rs");
    }
}
