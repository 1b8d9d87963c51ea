//! Choosing what is weighed: live bytes, bytes at the peak, bytes ever
//! allocated, or live blocks, summed per stack.

use std::path::Path;

use alloc_track::dump::Dump;

use crate::error::CliError;

/// What a table or a flamegraph weighs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Measure {
    /// Bytes allocated and not yet freed when the dump was taken.
    #[default]
    Live,
    /// Bytes each site held when the heap was at its peak (needs the
    /// tracker's peak breakdown).
    Peak,
    /// Bytes allocated since tracking began, freed or not: where the
    /// allocator is kept busy.
    Allocated,
    /// Live blocks (allocations) rather than bytes: where many small
    /// objects are kept.
    Blocks,
    /// Temporary allocations: blocks freed by their thread before it
    /// allocated anything else, the churn a reused buffer removes.
    Temporary,
    /// Live bytes grouped by the type of object that holds them (read
    /// from the stacks: see `alloc_track::types`). Weighs as `live`.
    Type,
}

impl Measure {
    /// What is weighed, for titles and messages ("live bytes").
    pub fn describe(self) -> &'static str {
        match self {
            Measure::Live => "live bytes",
            Measure::Peak => "bytes at the peak",
            Measure::Allocated => "allocated bytes",
            Measure::Blocks => "live blocks",
            Measure::Temporary => "temporary allocations",
            Measure::Type => "live bytes by type",
        }
    }

    /// The unit of the weight, for flamegraph tooltips.
    pub fn unit(self) -> &'static str {
        match self {
            Measure::Blocks | Measure::Temporary => "blocks",
            _ => "bytes",
        }
    }

    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Live => "live",
            Measure::Peak => "peak",
            Measure::Allocated => "allocated",
            Measure::Blocks => "blocks",
            Measure::Temporary => "temporary",
            Measure::Type => "type",
        }
    }
}

/// One stack's bytes and blocks under a measure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Weight {
    /// Index into [`Dump::stacks`].
    pub stack: u32,
    /// Bytes (live, at the peak, or allocated, by the measure).
    pub bytes: u64,
    /// Blocks counted the same way.
    pub blocks: u64,
}

impl Weight {
    /// The figure the measure ranks by: blocks for [`Measure::Blocks`],
    /// bytes otherwise.
    pub fn value(&self, measure: Measure) -> u64 {
        match measure {
            Measure::Blocks | Measure::Temporary => self.blocks,
            _ => self.bytes,
        }
    }
}

/// Sums the dump's figures per stack under `measure`, in stack order,
/// leaving out stacks whose weight is zero. `path` names the dump in errors.
///
/// Sites normally have one stack each, but nothing in the format forbids
/// two sites sharing one, so they are merged here rather than shown twice.
pub fn weigh(dump: &Dump, measure: Measure, path: &Path) -> Result<Vec<Weight>, CliError> {
    // `slot[stack]` is the index of that stack's entry in `weights`; sized
    // by the stack table actually read, never by a number from the file.
    let mut slot: Vec<Option<usize>> = vec![None; dump.stacks.len()];
    let mut weights: Vec<Weight> = Vec::new();
    let mut add = |stack: u32, bytes: u64, blocks: u64| {
        let Some(entry) = slot.get_mut(stack as usize) else {
            return; // validated dumps never get here
        };
        match entry {
            Some(i) => {
                if let Some(w) = weights.get_mut(*i) {
                    w.bytes = w.bytes.saturating_add(bytes);
                    w.blocks = w.blocks.saturating_add(blocks);
                }
            }
            None => {
                *entry = Some(weights.len());
                weights.push(Weight {
                    stack,
                    bytes,
                    blocks,
                });
            }
        }
    };
    match measure {
        Measure::Live | Measure::Blocks | Measure::Type => {
            for site in &dump.sites {
                add(site.stack, site.live_bytes, site.live_blocks);
            }
        }
        Measure::Allocated => {
            for site in &dump.sites {
                add(site.stack, site.total_bytes, site.total_blocks);
            }
        }
        // Temporary blocks have no bytes of their own in the dump.
        Measure::Temporary => {
            for site in &dump.sites {
                add(site.stack, 0, site.temporary_blocks);
            }
        }
        Measure::Peak => {
            if dump.peak_sites.is_empty() {
                return Err(CliError::NoPeakBreakdown {
                    path: path.to_path_buf(),
                });
            }
            for peak in &dump.peak_sites {
                add(peak.stack, peak.bytes, peak.blocks);
            }
        }
    }
    weights.retain(|w| w.value(measure) > 0);
    Ok(weights)
}

/// The sum of the weights' values, saturating (a validated dump's sums fit
/// in 64 bits).
pub fn total(weights: &[Weight], measure: Measure) -> u64 {
    weights
        .iter()
        .fold(0u64, |sum, w| sum.saturating_add(w.value(measure)))
}
