//! Turning a [`Snapshot`] into a dump: resolve every stack, share locations
//! between stacks, and merge sites whose stacks resolve alike.
//!
//! Written to be streamed: [`prepare`] resolves and groups the sites, then
//! [`Prepared::write_json`] writes the JSON entry by entry. Besides the
//! snapshot itself and the symbol cache (one entry per distinct return
//! address, shared by every site), that keeps about 5 bytes per site (the
//! grouping below), 16 more while grouping, and one entry per distinct
//! location. Resolving a stack again is cheap (every address is cached),
//! so the passes below resolve it again rather than keep it. [`build`]
//! drives the same passes into a whole [`Dump`] value, for
//! [`Snapshot::to_dump`].

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{self, BufWriter, Write};
use std::sync::Arc;

use crate::dump::stream::DumpWriter;
use crate::dump::{self, Birth, Dump, DumpError, Frame, FORMAT_NAME, FORMAT_VERSION};
use crate::symbolize::{self, Generation, ResolvedLocation};
use crate::{Mode, Snapshot};

/// A snapshot's dump with every stack resolved and grouped, ready to be
/// written: the slow part (resolving new addresses can take a while) done
/// before the file is opened, so that a temporary file is open only for
/// the writing. About 5 bytes per site.
pub(crate) struct Prepared<'a> {
    snapshot: &'a Snapshot,
    generation: Arc<Generation>,
    groups: Groups,
}

pub(crate) fn prepare(snapshot: &Snapshot) -> Prepared<'_> {
    // One look at the list of loaded objects for the whole dump, so every
    // pass resolves each stack alike even if a library is loaded meanwhile.
    let generation = symbolize::current_generation();
    let groups = Groups::of(snapshot, &generation);
    Prepared {
        snapshot,
        generation,
        groups,
    }
}

impl Prepared<'_> {
    /// Writes the dump as JSON to `out`, entry by entry, through a buffer;
    /// flushes at the end. The way [`Snapshot::save`] writes.
    pub(crate) fn write_json(&self, out: &mut dyn Write) -> Result<(), DumpError> {
        let io_error = |source| DumpError::Io { path: None, source };
        let buffered = BufWriter::with_capacity(64 * 1024, out);
        let mut writer = DumpWriter::begin(buffered, &header(self.snapshot)).map_err(io_error)?;
        self.walk(&mut writer).map_err(io_error)?;
        writer.finish().map_err(io_error)?;
        Ok(())
    }
}

/// The whole dump of `snapshot` as one value.
pub(crate) fn build(snapshot: &Snapshot) -> Dump {
    let mut dump = header(snapshot);
    let mut collect = Collect(&mut dump);
    // Collecting into vectors cannot fail.
    let _ = prepare(snapshot).walk(&mut collect);
    dump
}

/// Where the walk puts each entry: a JSON stream or a [`Dump`] value.
trait Entries {
    fn location(&mut self, address: u64, frames: &[Frame]) -> io::Result<()>;
    fn stack(&mut self, locations: &[u32], truncated: bool) -> io::Result<()>;
    fn site(&mut self, site: &dump::SiteRecord) -> io::Result<()>;
    fn peak_site(&mut self, peak: &dump::PeakSite) -> io::Result<()>;
    fn scope(&mut self, scope: &dump::Scope) -> io::Result<()>;
}

impl<W: Write> Entries for DumpWriter<W> {
    fn location(&mut self, address: u64, frames: &[Frame]) -> io::Result<()> {
        DumpWriter::location(self, address, frames)
    }
    fn stack(&mut self, locations: &[u32], truncated: bool) -> io::Result<()> {
        DumpWriter::stack(self, locations, truncated)
    }
    fn site(&mut self, site: &dump::SiteRecord) -> io::Result<()> {
        DumpWriter::site(self, site)
    }
    fn peak_site(&mut self, peak: &dump::PeakSite) -> io::Result<()> {
        DumpWriter::peak_site(self, peak)
    }
    fn scope(&mut self, scope: &dump::Scope) -> io::Result<()> {
        DumpWriter::scope(self, scope)
    }
}

struct Collect<'a>(&'a mut Dump);

impl Entries for Collect<'_> {
    fn location(&mut self, address: u64, frames: &[Frame]) -> io::Result<()> {
        self.0.locations.push(dump::Location {
            address,
            frames: frames.to_vec(),
        });
        Ok(())
    }
    fn stack(&mut self, locations: &[u32], truncated: bool) -> io::Result<()> {
        self.0.stacks.push(dump::StackRecord {
            locations: locations.to_vec(),
            truncated,
        });
        Ok(())
    }
    fn site(&mut self, site: &dump::SiteRecord) -> io::Result<()> {
        self.0.sites.push(site.clone());
        Ok(())
    }
    fn peak_site(&mut self, peak: &dump::PeakSite) -> io::Result<()> {
        self.0.peak_sites.push(*peak);
        Ok(())
    }
    fn scope(&mut self, scope: &dump::Scope) -> io::Result<()> {
        self.0.scopes.push(scope.clone());
        Ok(())
    }
}

/// Marks the end of a member list in [`Groups::next_member`].
const NO_MEMBER: u32 = u32::MAX;

/// The snapshot's sites grouped by resolved stack, without keeping any
/// resolved stack: a group is its first site (the leader, which gives the
/// group its place in the dump) and a list threaded through the sites.
/// Five bytes per site.
struct Groups {
    is_leader: Vec<bool>,
    next_member: Vec<u32>,
}

impl Groups {
    fn of(snapshot: &Snapshot, generation: &Generation) -> Groups {
        let count = snapshot.sites.len();
        let resolve = |site: u32| {
            symbolize::resolve_stack_in(generation, snapshot.sites[site as usize].stack.addresses)
        };
        // Sites with equal resolved stacks have equal hashes; sorting by
        // (hash, site) puts each group together in site order.
        let mut by_hash: Vec<(u64, u32)> = (0..count as u32)
            .map(|site| (stack_hash(&resolve(site)), site))
            .collect();
        by_hash.sort_unstable();
        let mut groups = Groups {
            is_leader: vec![false; count],
            next_member: vec![NO_MEMBER; count],
        };
        for run in by_hash.chunk_by(|a, b| a.0 == b.0) {
            if let [(_, only)] = run {
                groups.is_leader[*only as usize] = true;
                continue;
            }
            // Equal hashes: compare the stacks themselves. (leader's stack,
            // last member so far) per distinct stack in the run.
            let mut distinct: Vec<(Vec<ResolvedLocation>, u32)> = Vec::new();
            for &(_, site) in run {
                let stack = resolve(site);
                match distinct.iter_mut().find(|(s, _)| same_stack(s, &stack)) {
                    Some((_, last)) => {
                        groups.next_member[*last as usize] = site;
                        *last = site;
                    }
                    None => {
                        groups.is_leader[site as usize] = true;
                        distinct.push((stack, site));
                    }
                }
            }
        }
        groups
    }

    /// The groups' leaders, in site order.
    fn leaders(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.is_leader.len()).filter(|&site| self.is_leader[site])
    }

    /// A leader's group: the leader, then the other members in site order.
    fn members(&self, leader: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(leader), |&site| {
            let next = self.next_member[site];
            (next != NO_MEMBER).then_some(next as usize)
        })
    }
}

/// A hash that equal resolved stacks share. The frames behind an address
/// are the same for the whole dump, so the address and the number of
/// frames kept (trimming may keep fewer) stand for them.
fn stack_hash(stack: &[ResolvedLocation]) -> u64 {
    let mut hasher = DefaultHasher::new();
    stack.len().hash(&mut hasher);
    for location in stack {
        location.address.hash(&mut hasher);
        location.frames.len().hash(&mut hasher);
    }
    hasher.finish()
}

fn same_stack(a: &[ResolvedLocation], b: &[ResolvedLocation]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| LocationKey::of(a) == LocationKey::of(b))
}

/// A location's identity in the dump: the address and the frames kept.
/// Compared by pointer first (an untrimmed location shares the symbol
/// cache's frames) and hashed without the frames' text, so interning a
/// location costs no string hashing.
#[derive(Clone)]
struct LocationKey {
    address: usize,
    frames: Arc<[Frame]>,
}

impl LocationKey {
    fn of(location: &ResolvedLocation) -> LocationKey {
        LocationKey {
            address: location.address,
            frames: location.frames.clone(),
        }
    }
}

impl PartialEq for LocationKey {
    fn eq(&self, other: &Self) -> bool {
        self.address == other.address
            && (Arc::ptr_eq(&self.frames, &other.frames) || self.frames == other.frames)
    }
}

impl Eq for LocationKey {}

impl Hash for LocationKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.address.hash(state);
        self.frames.len().hash(state);
    }
}

impl Prepared<'_> {
    /// Every part of the dump after its header, in the order of the format.
    fn walk(&self, out: &mut impl Entries) -> io::Result<()> {
        let Prepared {
            snapshot,
            generation,
            groups,
        } = self;
        let resolve = |site: usize| {
            symbolize::resolve_stack_in(generation, snapshot.sites[site].stack.addresses)
        };

        // Locations, in order of first use by the groups in order.
        let mut location_index: HashMap<LocationKey, u32> = HashMap::new();
        for leader in groups.leaders() {
            for location in resolve(leader) {
                let key = LocationKey::of(&location);
                if !location_index.contains_key(&key) {
                    out.location(location.address as u64, &location.frames)?;
                    location_index.insert(key, location_index.len() as u32);
                }
            }
        }

        let mut locations = Vec::new();
        for leader in groups.leaders() {
            locations.clear();
            locations.extend(
                resolve(leader)
                    .iter()
                    .filter_map(|location| location_index.get(&LocationKey::of(location))),
            );
            let truncated = groups
                .members(leader)
                .any(|site| snapshot.sites[site].stack.truncated);
            out.stack(&locations, truncated)?;
        }
        drop(location_index);

        let scope_index: HashMap<u16, u32> = snapshot
            .scopes
            .iter()
            .enumerate()
            .map(|(index, scope)| (scope.id, index as u32))
            .collect();
        for (stack, leader) in groups.leaders().enumerate() {
            out.site(&site_figures(
                snapshot,
                groups,
                leader,
                stack as u32,
                &scope_index,
            ))?;
        }
        for (stack, leader) in groups.leaders().enumerate() {
            let mut peak = dump::PeakSite {
                stack: stack as u32,
                ..dump::PeakSite::default()
            };
            for site in groups.members(leader) {
                peak.bytes += snapshot.sites[site].peak_bytes;
                peak.blocks += snapshot.sites[site].peak_blocks;
            }
            if peak.blocks > 0 {
                out.peak_site(&peak)?;
            }
        }
        for scope in &snapshot.scopes {
            out.scope(&dump::Scope {
                name: scope.name.clone(),
                live_bytes: scope.live_bytes,
                live_blocks: scope.live_blocks,
                total_bytes: scope.total_bytes,
                total_blocks: scope.total_blocks,
            })?;
        }
        Ok(())
    }
}

/// The figures of one group, summed over its members.
fn site_figures(
    snapshot: &Snapshot,
    groups: &Groups,
    leader: usize,
    stack: u32,
    scope_index: &HashMap<u16, u32>,
) -> dump::SiteRecord {
    let mut site = dump::SiteRecord {
        stack,
        ..dump::SiteRecord::default()
    };
    let mut births: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut scoped: HashMap<u16, (u64, u64)> = HashMap::new();
    for member in groups.members(leader) {
        let member = &snapshot.sites[member];
        site.live_bytes += member.live_bytes;
        site.live_blocks += member.live_blocks;
        site.total_bytes += member.total_bytes;
        site.total_blocks += member.total_blocks;
        site.temporary_blocks += member.temporary_blocks;
        for &(scope, bytes, blocks) in &member.scopes {
            let entry = scoped.entry(scope).or_default();
            entry.0 += bytes;
            entry.1 += blocks;
        }
        for birth in member.births.as_slice() {
            let entry = births.entry(birth.epoch).or_default();
            entry.0 += birth.bytes;
            entry.1 += birth.blocks;
        }
    }
    site.births = births
        .into_iter()
        .map(|(epoch, (bytes, blocks))| Birth {
            epoch,
            bytes,
            blocks,
        })
        .collect();
    site.births.sort_by_key(|b| b.epoch);
    site.scopes = scoped
        .into_iter()
        .filter_map(|(id, (bytes, blocks))| {
            let index = scope_index.get(&id)?;
            Some(dump::SiteScope {
                scope: *index,
                bytes,
                blocks,
            })
        })
        .collect();
    site.scopes.sort_by_key(|s| s.scope);
    site
}

/// Everything in the dump before its tables (which stay empty here).
fn header(snapshot: &Snapshot) -> Dump {
    Dump {
        format: FORMAT_NAME.to_string(),
        version: FORMAT_VERSION,
        program: program_name(),
        pid: std::process::id(),
        timestamp_ms: snapshot.timestamp_ms,
        mode: match snapshot.mode {
            Mode::Full => "full",
            Mode::Sampled { .. } => "sampled",
            Mode::Count => "count",
        }
        .to_string(),
        stack_walker: crate::hot::view::capture::walker_if_settled().map(|walker| {
            match walker {
                crate::Walker::FramePointers => "frame-pointers",
                crate::Walker::Cfi => "cfi",
                crate::Walker::Unwinder => "unwinder",
            }
            .to_string()
        }),
        sample_mean_bytes: match snapshot.mode {
            Mode::Sampled { mean_bytes } => Some(mean_bytes),
            _ => None,
        },
        epoch: snapshot.epoch,
        totals: snapshot.totals,
        os: snapshot.os,
        allocator: snapshot.allocator,
        tracker: snapshot.health,
        locations: Vec::new(),
        stacks: Vec::new(),
        sites: Vec::new(),
        peak_sites: Vec::new(),
        scopes: Vec::new(),
    }
}

fn program_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| std::env::args().next())
        .unwrap_or_else(|| "unknown".to_string())
}
