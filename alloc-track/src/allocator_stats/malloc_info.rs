//! The reader of glibc's `malloc_info` report: how many arenas, and how
//! much of the free chunks' memory is whole pages that `malloc_trim` could
//! return.

/// Whole pages inside free chunks, estimated from one histogram bin of
/// `count` chunks totalling `total` bytes, none larger than `largest`: a
/// chunk of `s` bytes at a random offset in its first page spans about
/// `s - page` bytes of whole pages, and none if `s < page`.
fn whole_pages_in(largest: u64, total: u64, count: u64, page: u64) -> u64 {
    if largest < page {
        return 0;
    }
    total.saturating_sub(count.saturating_mul(page))
}

/// What `malloc_info`'s XML says: the arenas and the free-chunk histogram.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct MallocInfo {
    pub(super) arenas: u64,
    /// Estimated whole pages inside free chunks (the tops excluded).
    pub(super) whole_free_pages_bytes: u64,
}

/// Reads `malloc_info(0, …)`'s report: `<heap nr="…">` per arena, and per
/// bin `<size from="…" to="…" total="…" count="…"/>` (or `<unsorted …/>`).
pub(super) fn parse_malloc_info(xml: &str, page: u64) -> MallocInfo {
    let mut info = MallocInfo::default();
    for element in xml.split('<').map(str::trim) {
        if element.starts_with("heap ") {
            info.arenas += 1;
        } else if element.starts_with("size ") || element.starts_with("unsorted ") {
            let field = |name: &str| attribute(element, name).unwrap_or(0);
            info.whole_free_pages_bytes +=
                whole_pages_in(field("to"), field("total"), field("count"), page);
        }
    }
    info
}

/// The value of `name="123"` in an XML element's text.
fn attribute(element: &str, name: &str) -> Option<u64> {
    let mut rest = element;
    while let Some(at) = rest.find(name) {
        let after = &rest[at + name.len()..];
        let preceded_by_space = rest[..at].ends_with(' ');
        if let (true, Some(value)) = (preceded_by_space, after.strip_prefix("=\"")) {
            return value.split('"').next()?.parse().ok();
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"<malloc version="1">
<heap nr="0">
<sizes>
<size from="33" to="48" total="480" count="10"/>
<size from="8193" to="12288" total="40960" count="4"/>
<unsorted from="20001" to="20001" total="20001" count="1"/>
</sizes>
<total type="fast" count="10" size="480"/>
<total type="rest" count="5" size="60961"/>
</heap>
<heap nr="1">
<sizes>
</sizes>
</heap>
<total type="mmap" count="0" size="0"/>
</malloc>
"#;

    #[test]
    fn counts_arenas_and_whole_free_pages() {
        let info = parse_malloc_info(REPORT, 4096);
        assert_eq!(info.arenas, 2);
        // Small chunks hold no page; 4 chunks of 10 KiB hold about 6 KiB
        // each; the unsorted 20,001 bytes about 15,905.
        assert_eq!(
            info.whole_free_pages_bytes,
            (40960 - 4 * 4096) + (20001 - 4096)
        );
    }

    #[test]
    fn attributes_are_found_by_whole_name() {
        let element = r#"size from="1" to="2" total="3" count="4"/>"#;
        assert_eq!(attribute(element, "to"), Some(2));
        assert_eq!(attribute(element, "total"), Some(3));
        assert_eq!(attribute(element, "missing"), None);
    }
}
