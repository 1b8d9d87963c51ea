//! Scopes in dumps: the per-scope table of a report, and a dump restricted
//! to one scope's live blocks for `report --scope NAME`.

use std::io::{self, Write};
use std::path::Path;

use alloc_track::dump::{Dump, Totals};
use alloc_track::human::{Bytes, Count};

use crate::error::CliError;

/// The dump as if only the live blocks allocated inside scope `name`
/// existed: each site keeps its share in that scope (sites without one go),
/// and the totals become the sums. Allocation totals are not kept per site
/// and scope, so a site's `total_*` become its `live_*`; the peak breakdown
/// (not kept per scope either) is dropped.
pub fn restrict(mut dump: Dump, name: &str, path: &Path) -> Result<Dump, CliError> {
    let Some(index) = dump.scopes.iter().position(|scope| scope.name == name) else {
        return Err(CliError::NoSuchScope {
            path: path.to_path_buf(),
            name: name.to_string(),
            known: dump.scopes.iter().map(|scope| scope.name.clone()).collect(),
        });
    };
    let index = index as u32;
    let mut totals = Totals::default();
    dump.sites.retain_mut(|site| {
        let (bytes, blocks) = site
            .scopes
            .iter()
            .filter(|part| part.scope == index)
            .fold((0u64, 0u64), |(b, n), part| {
                (b.saturating_add(part.bytes), n.saturating_add(part.blocks))
            });
        site.live_bytes = bytes;
        site.live_blocks = blocks;
        site.total_bytes = bytes;
        site.total_blocks = blocks;
        site.births.clear();
        site.scopes.retain(|part| part.scope == index);
        totals.live_bytes = totals.live_bytes.saturating_add(bytes);
        totals.live_blocks = totals.live_blocks.saturating_add(blocks);
        blocks > 0
    });
    totals.total_bytes = totals.live_bytes;
    totals.total_blocks = totals.live_blocks;
    totals.peak_bytes = totals.live_bytes;
    dump.totals = totals;
    dump.peak_sites.clear();
    Ok(dump)
}

/// The scopes table of a report: each scope's live heap and allocations.
pub fn write_table(dump: &Dump, out: &mut impl Write) -> io::Result<()> {
    if dump.scopes.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "scopes (alloc_track::scope), by live bytes")?;
    writeln!(
        out,
        "{:>11} {:>10} {:>11} {:>10}  scope",
        "live blocks", "live", "allocs", "allocated"
    )?;
    let mut scopes: Vec<_> = dump.scopes.iter().collect();
    scopes.sort_by(|a, b| b.live_bytes.cmp(&a.live_bytes).then(a.name.cmp(&b.name)));
    for scope in scopes {
        writeln!(
            out,
            "{:>11} {:>10} {:>11} {:>10}  {}",
            Count(scope.live_blocks),
            Bytes(scope.live_bytes),
            Count(scope.total_blocks),
            Bytes(scope.total_bytes),
            scope.name
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc_track::dump::{
        Location, Scope, SiteRecord, SiteScope, StackRecord, FORMAT_NAME, FORMAT_VERSION,
    };

    fn dump() -> Dump {
        let site = |stack, live: u64, parts: Vec<SiteScope>| SiteRecord {
            stack,
            live_bytes: live,
            live_blocks: live / 100,
            total_bytes: live * 2,
            total_blocks: live / 50,
            births: Vec::new(),
            temporary_blocks: 0,
            scopes: parts,
        };
        let part = |scope, bytes: u64| SiteScope {
            scope,
            bytes,
            blocks: bytes / 100,
        };
        let scope = |name: &str, live: u64| Scope {
            name: name.to_string(),
            live_bytes: live,
            live_blocks: live / 100,
            total_bytes: live * 3,
            total_blocks: live / 30,
        };
        Dump {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            program: "app".into(),
            pid: 1,
            timestamp_ms: 0,
            mode: "full".into(),
            sample_mean_bytes: None,
            stack_walker: None,
            epoch: 0,
            totals: Totals {
                live_bytes: 1500,
                live_blocks: 15,
                total_bytes: 3000,
                total_blocks: 30,
                peak_bytes: 2000,
            },
            os: Default::default(),
            allocator: None,
            tracker: Default::default(),
            locations: vec![Location::default(), Location::default()],
            stacks: vec![
                StackRecord {
                    locations: vec![0],
                    truncated: false,
                },
                StackRecord {
                    locations: vec![1],
                    truncated: false,
                },
            ],
            sites: vec![
                site(0, 1000, vec![part(0, 600), part(1, 200)]),
                site(1, 500, vec![part(1, 500)]),
            ],
            peak_sites: Vec::new(),
            scopes: vec![scope("request", 600), scope("batch", 700)],
        }
    }

    #[test]
    fn restricting_keeps_only_the_scopes_live_blocks() {
        let dump = dump();
        dump.validate().unwrap();
        let batch = restrict(dump.clone(), "batch", Path::new("d.json")).unwrap();
        batch.validate().unwrap();
        assert_eq!(batch.sites.len(), 2);
        assert_eq!(
            (batch.totals.live_bytes, batch.totals.live_blocks),
            (700, 7)
        );
        let request = restrict(dump, "request", Path::new("d.json")).unwrap();
        assert_eq!(request.sites.len(), 1);
        assert_eq!(request.sites[0].live_bytes, 600);
    }

    #[test]
    fn an_unknown_scope_lists_the_known_ones() {
        let error = restrict(dump(), "nope", Path::new("d.json"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "d.json: no scope named \"nope\" in this dump; it has \"request\", \"batch\""
        );
        let mut bare = dump();
        bare.scopes.clear();
        for site in &mut bare.sites {
            site.scopes.clear();
        }
        let error = restrict(bare, "nope", Path::new("d.json"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("it has none"), "{error}");
    }

    #[test]
    fn the_table_lists_scopes_by_live_bytes() {
        let mut out = Vec::new();
        write_table(&dump(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<&str> = text.lines().skip(3).collect();
        assert!(
            rows[0].ends_with("  batch") && rows[0].contains("700 B"),
            "{text}"
        );
        assert!(rows[1].ends_with("  request"), "{text}");
    }
}
