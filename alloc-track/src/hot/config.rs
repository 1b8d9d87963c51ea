//! The tracker's settings, fixed when the `Tracker` static is built and
//! passed by reference into every hot-path call (no global to read).

use super::stacks::MAX_SITES;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// The most distinct stacks recorded before new ones go to "other".
    pub(crate) max_sites: u32,
    /// How far, in thousandths, live bytes must climb above the last peak
    /// breakdown before a new one is taken. Each breakdown copies every
    /// site's live figures, so a margin keeps the number of breakdowns
    /// logarithmic in the peak instead of one per new high.
    pub(crate) peak_margin_permille: u32,
}

/// The smallest climb that triggers a new peak breakdown, so that a small
/// heap does not refresh on every allocation.
pub(crate) const MIN_PEAK_MARGIN_BYTES: u64 = 64 * 1024;

impl Config {
    pub(crate) const DEFAULT: Config = Config {
        max_sites: MAX_SITES,
        peak_margin_permille: 20,
    };

    /// Live bytes above which a new breakdown is due, given the live bytes
    /// at the last one.
    #[inline]
    pub(crate) fn next_breakdown_at(&self, last: u64) -> u64 {
        let margin = (last / 1000).saturating_mul(u64::from(self.peak_margin_permille));
        last.saturating_add(margin.max(MIN_PEAK_MARGIN_BYTES))
    }
}
