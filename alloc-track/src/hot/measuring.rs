//! The hot-path side of [`measure`](fn@crate::measure): per-thread flows by
//! site for each open measure frame, and the blocks born inside them.
//!
//! A thread's state is created by the outermost `measure` call and freed
//! when it returns; nested calls push frames. Every allocation and free
//! the thread makes while a frame is open is added to every open frame, so
//! nested measures each see exactly their own span. The state lives in
//! memory of its own (the struct from `System`, its maps from mapped
//! pages) and is only ever touched by its own thread.
//!
//! Blocks born inside a measure carry the measure's `tag` in the live
//! table and are listed in `births`. When the thread frees one, it leaves
//! `births`; when another thread frees it, the tag check at the end finds
//! it gone (or its address reused under another tag), so the retained
//! figures stay exact without other threads touching this state.
//!
//! The live record has room for 1,023 tags. A measure that opens while all
//! are in use runs with tag 0, the tag of every block born outside a
//! measure: its own frees still leave `births`, but a block another thread
//! freed can no longer be told from a newcomer at the same address and
//! site, so its retained figures become an upper bound (and say so). The
//! flows above need no tag and stay exact.

use super::live_block::LiveBlock;
use super::raw_map::RawMap;
use super::site_id::SiteId;

/// The deepest nesting of `measure` calls on one thread.
pub(crate) const MAX_NESTING: usize = 32;

/// What one thread allocated and freed at one site during a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SiteFlow {
    pub(crate) alloc_bytes: u64,
    pub(crate) alloc_blocks: u64,
    pub(crate) freed_bytes: u64,
    pub(crate) freed_blocks: u64,
}

/// A block the thread allocated inside its outermost measure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Birth {
    pub(crate) site: SiteId,
    /// The state's sequence number at the allocation: a frame owns the
    /// births whose `seq` is at least its `start_seq`.
    pub(crate) seq: u32,
}

pub(crate) struct Frame {
    pub(crate) start_seq: u32,
    /// Flows keyed by `site + 1` (the map's keys must not be 0).
    pub(crate) sites: RawMap<SiteFlow>,
    /// Net bytes the thread allocated minus freed since the frame opened.
    pub(crate) net_bytes: i64,
    /// The highest `net_bytes` reached.
    pub(crate) peak_bytes: i64,
    /// Set when the tracker ran out of memory for this frame's books.
    pub(crate) incomplete: bool,
}

impl Frame {
    const fn new(start_seq: u32) -> Self {
        Frame {
            start_seq,
            sites: RawMap::new(),
            net_bytes: 0,
            peak_bytes: 0,
            incomplete: false,
        }
    }
}

pub(crate) struct MeasureState {
    /// Unique among the outermost measures open at once; 0 when none was
    /// left (an untagged measure, whose retained figures are approximate).
    pub(crate) tag: u32,
    pub(crate) seq: u32,
    pub(crate) depth: usize,
    pub(crate) frames: [Frame; MAX_NESTING],
    /// Live blocks born inside the outermost frame, keyed by address.
    pub(crate) births: RawMap<Birth>,
}

impl MeasureState {
    pub(crate) fn new(tag: u32) -> Self {
        MeasureState {
            tag,
            seq: 0,
            depth: 0,
            frames: [const { Frame::new(0) }; MAX_NESTING],
            births: RawMap::new(),
        }
    }

    /// Opens a frame; false if nesting is already at its limit.
    pub(crate) fn push(&mut self) -> bool {
        if self.depth == MAX_NESTING {
            return false;
        }
        self.seq = self.seq.wrapping_add(1);
        self.frames[self.depth] = Frame::new(self.seq);
        self.depth += 1;
        true
    }

    /// Closes the innermost frame and hands it over.
    pub(crate) fn pop(&mut self) -> Option<Frame> {
        self.depth = self.depth.checked_sub(1)?;
        self.seq = self.seq.wrapping_add(1);
        Some(std::mem::replace(
            &mut self.frames[self.depth],
            Frame::new(0),
        ))
    }

    #[inline]
    pub(crate) fn on_alloc(&mut self, address: usize, size: usize, site: SiteId) {
        let size = size as u64;
        let seq = self.seq;
        let mut failed = self.births.insert(address, Birth { site, seq }).is_err();
        for frame in &mut self.frames[..self.depth] {
            match frame
                .sites
                .get_or_insert(site as usize + 1, SiteFlow::default())
            {
                Ok(flow) => {
                    flow.alloc_bytes += size;
                    flow.alloc_blocks += 1;
                }
                Err(_) => failed = true,
            }
            frame.net_bytes += size as i64;
            frame.peak_bytes = frame.peak_bytes.max(frame.net_bytes);
            frame.incomplete |= failed;
        }
    }

    #[inline]
    pub(crate) fn on_free(&mut self, address: usize, block: &LiveBlock) {
        let size = block.size() as u64;
        if block.tag() == self.tag {
            self.births.remove(address);
        }
        for frame in &mut self.frames[..self.depth] {
            match frame
                .sites
                .get_or_insert(block.site() as usize + 1, SiteFlow::default())
            {
                Ok(flow) => {
                    flow.freed_bytes += size;
                    flow.freed_blocks += 1;
                }
                Err(_) => frame.incomplete = true,
            }
            frame.net_bytes -= size as i64;
        }
    }
}
