//! Building a [`Dump`] from a [`Snapshot`]: resolve every stack, share
//! locations between stacks, and merge sites whose stacks resolve alike.

use std::collections::HashMap;
use std::sync::Arc;

use crate::dump::{self, Birth, Dump, Frame, FORMAT_NAME, FORMAT_VERSION};
use crate::site::group_by_resolved_stack;
use crate::{Mode, Snapshot};

pub(crate) fn build(snapshot: &Snapshot) -> Dump {
    let mut locations: Vec<dump::Location> = Vec::new();
    let mut location_index: HashMap<(usize, Arc<[Frame]>), u32> = HashMap::new();
    let mut stacks = Vec::new();
    let mut sites = Vec::new();
    let mut peak_sites = Vec::new();
    let scope_index: HashMap<u16, u32> = snapshot
        .scopes
        .iter()
        .enumerate()
        .map(|(index, scope)| (scope.id, index as u32))
        .collect();

    for (stack, members) in group_by_resolved_stack(snapshot.sites.iter().map(|s| s.stack)) {
        let stack_locations = stack
            .iter()
            .map(|location| {
                let key = (location.address, location.frames.clone());
                *location_index.entry(key).or_insert_with(|| {
                    locations.push(dump::Location {
                        address: location.address as u64,
                        frames: location.frames.to_vec(),
                    });
                    (locations.len() - 1) as u32
                })
            })
            .collect();
        let stack_id = stacks.len() as u32;
        stacks.push(dump::Stack {
            locations: stack_locations,
            truncated: members.iter().any(|&i| snapshot.sites[i].stack.truncated),
        });

        let mut site = dump::Site {
            stack: stack_id,
            ..dump::Site::default()
        };
        let mut births: HashMap<u32, (u64, u64)> = HashMap::new();
        let mut scoped: HashMap<u16, (u64, u64)> = HashMap::new();
        let mut peak = dump::PeakSite {
            stack: stack_id,
            ..dump::PeakSite::default()
        };
        for &i in &members {
            let member = &snapshot.sites[i];
            peak.bytes += member.peak_bytes;
            peak.blocks += member.peak_blocks;
            site.live_bytes += member.live_bytes;
            site.live_blocks += member.live_blocks;
            site.total_bytes += member.total_bytes;
            site.total_blocks += member.total_blocks;
            for &(scope, bytes, blocks) in &member.scopes {
                let entry = scoped.entry(scope).or_default();
                entry.0 += bytes;
                entry.1 += blocks;
            }
            for birth in &member.births {
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
        sites.push(site);
        if peak.blocks > 0 {
            peak_sites.push(peak);
        }
    }

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
        stack_walker: crate::hot::capture::walker_if_settled().map(|walker| {
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
        tracker: snapshot.health,
        locations,
        stacks,
        sites,
        peak_sites,
        scopes: snapshot
            .scopes
            .iter()
            .map(|scope| dump::Scope {
                name: scope.name.clone(),
                live_bytes: scope.live_bytes,
                live_blocks: scope.live_blocks,
                total_bytes: scope.total_bytes,
                total_blocks: scope.total_blocks,
            })
            .collect(),
    }
}

fn program_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| std::env::args().next())
        .unwrap_or_else(|| "unknown".to_string())
}
