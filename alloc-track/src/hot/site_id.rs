//! Site ids: the small numbers the stack table hands out for call stacks,
//! and the few ids with a fixed meaning. Here, at the bottom, because the
//! live record packs them, the configuration bounds them and the sampler
//! and measure books key by them, none of which should need the table.

/// A call site's index in the stack table.
pub(crate) type SiteId = u32;

/// Bits of a site id in the live record.
pub(crate) const SITE_BITS: u32 = 22;

/// The catch-all site for stacks that found the table full (or whose
/// frames could not be stored): it has no frames.
pub(crate) const OVERFLOW_SITE: SiteId = 0;

/// The most sites the table can ever hold (4 Mi, less the internal
/// marker): a site id must fit the live record's [`SITE_BITS`].
pub(crate) const MAX_SITES: u32 = (1 << SITE_BITS) - 1;

/// The marker site of blocks the tracker allocated for itself in the modes
/// that record only some blocks (they must be found again at their free so
/// that they are not counted). Never a real site: ids stay below
/// [`MAX_SITES`].
pub(crate) const INTERNAL_SITE: SiteId = MAX_SITES;
