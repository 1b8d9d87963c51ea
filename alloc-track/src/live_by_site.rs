//! The live table summed by call site, the first step of a snapshot, in
//! as little memory as the sums allow: a periodic dump of a table of
//! hundreds of thousands of sites must not be an OOM risk.
//!
//! Live figures go to a vector indexed by site id (ids are dense), 24
//! bytes a site, with the birth epoch of the site's blocks when they share
//! one (most do); other epochs and scopes, of which most sites have none,
//! to maps of their own keyed by (site, epoch) and (site, scope). A map of
//! per-site maps, the obvious shape, took about 300 bytes a site.

use std::collections::HashMap;

use crate::hot::view::config::Mode;
use crate::hot::view::live;
use crate::hot::view::sampler;
use crate::hot::view::stacks::{self, SiteId};

/// A site's live figures. Blocks are summed in 1/1024ths (a sample's
/// weight is rarely whole) and rounded to whole blocks once, at the end.
///
/// Most sites' live blocks were all born in one epoch: the tally keeps
/// that epoch, and only blocks of a site's other epochs go to
/// [`LiveBySite::other_births`]. A map entry per site for the common case
/// cost a snapshot of many sites about 70 bytes a site at its peak.
#[derive(Clone, Copy)]
pub(crate) struct LiveTally {
    pub(crate) bytes: u64,
    pub(crate) blocks: u64,
    /// The birth epoch of the site's first block met (`NO_EPOCH`: none).
    pub(crate) epoch: u32,
    /// Some of its blocks were born in another epoch.
    pub(crate) mixed: bool,
}

/// No block met yet.
pub(crate) const NO_EPOCH: u32 = u32::MAX;

impl Default for LiveTally {
    fn default() -> Self {
        LiveTally {
            bytes: 0,
            blocks: 0,
            epoch: NO_EPOCH,
            mixed: false,
        }
    }
}

/// The live table summed by site; blocks in 1/1024ths throughout.
pub(crate) struct LiveBySite {
    /// Indexed by site id; sites with no live block have zero blocks.
    pub(crate) tallies: Vec<LiveTally>,
    /// (bytes, blocks) by (site, birth epoch), for the blocks not born in
    /// their site's [`LiveTally::epoch`].
    pub(crate) other_births: HashMap<(SiteId, u32), (u64, u64)>,
    /// (bytes, blocks) by (site, scope id), for blocks allocated in a scope.
    pub(crate) scoped: HashMap<(SiteId, u16), (u64, u64)>,
}

/// Walks the live table once and sums it by site.
pub(crate) fn sum(mode: Mode) -> LiveBySite {
    let mut sums = LiveBySite {
        // Sized once, for every id handed out so far: grown by doubling as
        // ids came up, it held up to twice that at its peak.
        tallies: vec![LiveTally::default(); stacks::ids_handed_out()],
        other_births: HashMap::new(),
        scoped: HashMap::new(),
    };
    live::for_each(|_, block| {
        // Weight 0: the tracker's own blocks and blocks recorded only for
        // a `measure` in the partial modes.
        let weight = sampler::weight_of(block, mode);
        if weight == 0 {
            return;
        }
        let bytes = sampler::weighted_bytes(block.size() as u64, weight);
        let site = block.site();
        if site as usize >= sums.tallies.len() {
            sums.tallies.resize(site as usize + 1, LiveTally::default());
        }
        let tally = &mut sums.tallies[site as usize];
        tally.bytes += bytes;
        tally.blocks += weight;
        if tally.epoch == NO_EPOCH {
            tally.epoch = block.birth;
        } else if tally.epoch != block.birth {
            tally.mixed = true;
            let birth = sums.other_births.entry((site, block.birth)).or_default();
            birth.0 += bytes;
            birth.1 += weight;
        }
        if block.scope() != 0 {
            let scope = sums.scoped.entry((site, block.scope())).or_default();
            scope.0 += bytes;
            scope.1 += weight;
        }
    });
    sums
}

/// No row in the snapshot's sites for this site id.
pub(crate) const NO_ROW: u32 = u32::MAX;

/// The entries of a map by (site, key) as (row, key, bytes, blocks),
/// sorted by row then key, the map freed: each row's entries are one run,
/// to be collected into a list of exactly their number. `row_of` gives
/// each site id's row.
pub(crate) fn by_row<K: Ord + Copy>(
    map: HashMap<(SiteId, K), (u64, u64)>,
    row_of: &[u32],
) -> Vec<(u32, K, u64, u64)> {
    let mut entries = Vec::with_capacity(map.len());
    for ((site, key), (bytes, blocks)) in map {
        match row_of.get(site as usize) {
            Some(&row) if row != NO_ROW => entries.push((row, key, bytes, blocks)),
            _ => {}
        }
    }
    entries.sort_unstable_by_key(|&(row, key, ..)| (row, key));
    entries
}
