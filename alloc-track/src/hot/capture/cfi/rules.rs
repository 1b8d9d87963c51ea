//! Compact unwind rules: what the CFI walk does with a cached return
//! address, in a few instructions instead of framehop's general machinery.
//!
//! On x86_64 every rule framehop caches, and nearly every DWARF row, finds
//! the caller's frame by additions: the caller's stack pointer (the CFA) is
//! the stack or frame pointer plus a constant, its return address sits just
//! below it, and its frame pointer is either unchanged or loaded from the
//! stack or frame pointer plus a constant. A [`Rule`] stores exactly that.
//!
//! Rules are not translated from framehop's types (whose DWARF path returns
//! some results without a rule at all) but *observed*: [`derive`] has
//! framehop unwind the frame once from made-up registers, with a stack
//! whose every word holds its own address, marked. Where the results land
//! says which register each came from and at what offset; anything that is
//! not such a sum (a CFA read from memory, a realigned stack) is refused,
//! and the walk leaves that frame, and that capture, to the unwinder. The
//! periodic comparison with the unwinder (`trust.rs`) checks the whole.

use framehop::x86_64::UnwindRegsX86_64;
use framehop::{FrameAddress, Unwinder};

use framehop::x86_64::CacheX86_64;

use super::{Policy, Tables};

/// The made-up stack pointer, frame pointer and mark of a loaded word:
/// far enough apart that no offset a rule can hold (framehop's are 16-bit
/// multiples of 8) makes one look like another.
const PROBE_SP: u64 = 1 << 36;
const PROBE_BP: u64 = 1 << 44;
const LOADED: u64 = 1 << 52;
/// The largest offset from a register a rule may hold.
const MAX_OFFSET: i64 = 1 << 30;

/// Which register an address is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Base {
    StackPointer,
    FramePointer,
}

/// One frame's unwind rule, for return addresses (never the capture's first
/// frame, whose rules differ: see `framehop`'s `is_first_frame`): the
/// caller's stack pointer (the CFA) is `cfa_base + cfa_offset`, its return
/// address the word below it, and its frame pointer unchanged or loaded
/// from a slot `bp_offset` from the CFA (where a prologue saved it, a few
/// words below) or, where the slot and the CFA come from different
/// registers, from the slot's own register. Flat integers and flag bits, so that applying one is a few loads
/// and adds with no matching on variants, and so that a cache entry is 16
/// bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rule {
    cfa_offset: i32,
    bp_offset: i16,
    flags: u8,
}

/// The frame has no caller: the stack ends here.
const ROOT: u8 = 1;
/// The CFA is the frame pointer plus the offset (else the stack pointer).
const CFA_FROM_BP: u8 = 2;
/// The caller's frame pointer was saved at the CFA plus `bp_offset`...
const BP_SAVED: u8 = 4;
/// ...or at the old stack pointer plus it...
const BP_SAVED_FROM_SP: u8 = 8;
/// ...or at the old frame pointer plus it (else it is unchanged).
const BP_SAVED_FROM_BP: u8 = 16;

impl Rule {
    const ROOT: Rule = Rule {
        cfa_offset: 0,
        bp_offset: 0,
        flags: ROOT,
    };

    /// The rule whose CFA is `cfa` and whose caller's frame pointer was
    /// saved at `saved_bp` (both as a register and an offset), if its
    /// offsets fit.
    fn caller(cfa: (Base, i32), saved_bp: Option<(Base, i32)>) -> Option<Rule> {
        let mut flags = if cfa.0 == Base::FramePointer {
            CFA_FROM_BP
        } else {
            0
        };
        let mut bp_offset = 0;
        if let Some((base, offset)) = saved_bp {
            // Relative to the CFA where both come from one register: a few
            // words, whatever the frame's size. Else relative to its own
            // register.
            let (flag, offset) = if base == cfa.0 {
                (BP_SAVED, offset.checked_sub(cfa.1)?)
            } else if base == Base::StackPointer {
                (BP_SAVED_FROM_SP, offset)
            } else {
                (BP_SAVED_FROM_BP, offset)
            };
            flags |= flag;
            bp_offset = i16::try_from(offset).ok()?;
        }
        Some(Rule {
            cfa_offset: cfa.1,
            bp_offset,
            flags,
        })
    }

    /// Unwinds one frame from `sp` and `bp`, reading the stack through
    /// `read` (bounds-checked by the caller). Err: the stack cannot be
    /// read or does not climb; the walk gives up.
    #[inline(always)]
    pub(super) fn apply(
        self,
        sp: &mut u64,
        bp: &mut u64,
        read: &mut impl FnMut(u64) -> Result<u64, ()>,
    ) -> Result<Step, ()> {
        let flags = self.flags;
        if flags & ROOT != 0 {
            return Ok(Step::Root);
        }
        let (old_sp, old_bp) = (*sp, *bp);
        let cfa_base = if flags & CFA_FROM_BP != 0 {
            // framehop's frame-pointer rule ends the stack at a null frame
            // pointer, as the C runtime's first frame leaves it.
            if old_bp == 0 {
                return Ok(Step::Root);
            }
            old_bp
        } else {
            old_sp
        };
        let cfa = cfa_base.wrapping_add_signed(i64::from(self.cfa_offset));
        // Callers sit higher on the stack.
        if cfa <= old_sp {
            return Err(());
        }
        let bp_slot_base = if flags & BP_SAVED != 0 {
            cfa
        } else if flags & BP_SAVED_FROM_SP != 0 {
            old_sp
        } else if flags & BP_SAVED_FROM_BP != 0 {
            old_bp
        } else {
            0
        };
        let new_bp = if bp_slot_base != 0 {
            read(bp_slot_base.wrapping_add_signed(i64::from(self.bp_offset)))?
        } else {
            old_bp
        };
        let return_address = read(cfa - 8)?;
        if return_address == 0 {
            return Ok(Step::Root);
        }
        *sp = cfa;
        *bp = new_bp;
        Ok(Step::Caller(return_address))
    }
}

/// Where a step ends.
pub(super) enum Step {
    /// The caller's return address; `sp` and `bp` now hold the caller's.
    Caller(u64),
    /// The stack ends here.
    Root,
}

/// The rule of the frame at return address `frame`, observed by having
/// framehop unwind it from made-up registers. `None`: framehop could not
/// unwind it, or its rule is not a sum of a register and a constant.
pub(super) fn derive(
    frame: FrameAddress,
    tables: &Tables,
    cache: &mut CacheX86_64<Policy>,
) -> Option<Rule> {
    let mut registers = UnwindRegsX86_64::new(frame.address(), PROBE_SP, PROBE_BP);
    // Every word of the made-up stack holds its own address, marked.
    let mut read = |address: u64| -> Result<u64, ()> {
        if address & LOADED != 0 {
            return Err(()); // a loaded word used as an address
        }
        Ok(address | LOADED)
    };
    let return_address = match tables.unwind_frame(frame, &mut registers, cache, &mut read) {
        Ok(Some(address)) => address,
        Ok(None) => return Some(Rule::ROOT),
        Err(_) => return None,
    };
    let cfa = registers.sp();
    let cfa_from = register_plus_offset(cfa)?;
    // The return address must be the word just below the new stack
    // pointer, as `apply` reads it.
    if return_address != (cfa - 8) | LOADED {
        return None;
    }
    let saved_bp = match registers.bp() {
        PROBE_BP => None,
        loaded if loaded & LOADED != 0 => Some(register_plus_offset(loaded & !LOADED)?),
        _ => return None,
    };
    Rule::caller(cfa_from, saved_bp)
}

/// Which made-up register `address` was computed from, and the offset.
fn register_plus_offset(address: u64) -> Option<(Base, i32)> {
    [
        (Base::StackPointer, PROBE_SP),
        (Base::FramePointer, PROBE_BP),
    ]
    .into_iter()
    .find_map(|(base, register)| {
        let offset = address.wrapping_sub(register) as i64;
        (offset.abs() < MAX_OFFSET).then_some((base, offset as i32))
    })
}

/// A thread's cache of rules by return address: direct-mapped, each entry
/// tagged with the address and the generation of the module list it was
/// derived under (a list rebuilt after a `dlopen` makes every older entry a
/// miss).
pub(super) struct RuleCache {
    entries: Box<[Entry]>,
}

/// See [`RuleCache::reader`]. Valid while its cache is: inserting changes
/// entries, never the table.
#[derive(Clone, Copy)]
pub(super) struct RuleReader {
    entries: *const Entry,
    mask: usize,
    generation_bits: u64,
}

impl RuleReader {
    #[inline(always)]
    pub(super) fn get(self, address: u64) -> Option<Rule> {
        let slot = (address.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & self.mask;
        // SAFETY: `slot` is masked to the table's length (a power of two),
        // and the table, owned by the cache this reader came from, lives
        // as long as the walk that uses the reader.
        let entry = unsafe { self.entries.add(slot).read() };
        let tag = (address & ((1 << 48) - 1)) | self.generation_bits;
        (entry.tag == tag).then_some(entry.rule)
    }
}

/// 16 bytes: the tag, then the rule.
#[derive(Clone, Copy)]
struct Entry {
    /// The lookup address (return address - 1) in the low 48 bits, which
    /// hold every user-space address, and the module list's generation in
    /// the high 16; 0: empty.
    tag: u64,
    rule: Rule,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 16);

/// The tag of `address` under module list `generation`.
#[inline(always)]
fn tag(address: u64, generation: u16) -> u64 {
    (address & ((1 << 48) - 1)) | u64::from(generation) << 48
}

impl RuleCache {
    /// A cache of `slots` entries, a power of two.
    pub(super) fn new(slots: usize) -> Self {
        let empty = Entry {
            tag: 0,
            rule: Rule::ROOT,
        };
        RuleCache {
            entries: vec![empty; slots.next_power_of_two()].into_boxed_slice(),
        }
    }

    /// Return addresses differ in their low bits; a multiply spreads
    /// nearby ones over the table. [`RuleReader::get`] computes the same.
    #[inline(always)]
    fn slot(&self, address: u64) -> usize {
        let hash = address.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        hash as usize & (self.entries.len() - 1)
    }

    /// A reader of the cache for one walk: the table's address, size and
    /// the generation's tag bits in locals, so that the walk's loop does
    /// not reload them through the cache (which inserting may change, as
    /// far as the compiler can tell) at every frame.
    #[inline(always)]
    pub(super) fn reader(&self, generation: u16) -> RuleReader {
        RuleReader {
            entries: self.entries.as_ptr(),
            mask: self.entries.len() - 1,
            generation_bits: u64::from(generation) << 48,
        }
    }

    pub(super) fn insert(&mut self, address: u64, generation: u16, rule: Rule) {
        let slot = self.slot(address);
        if let Some(entry) = self.entries.get_mut(slot) {
            *entry = Entry {
                tag: tag(address, generation),
                rule,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack of words at 0x1000.., for `apply`.
    fn reader(words: &[u64]) -> impl FnMut(u64) -> Result<u64, ()> + '_ {
        move |address| {
            let index = address.checked_sub(0x1000).ok_or(())? / 8;
            words.get(index as usize).copied().ok_or(())
        }
    }

    #[test]
    fn a_frame_pointer_rule_follows_the_chain() {
        // [bp] = caller's bp, [bp + 8] = return address.
        let words = [0, 0, 0x1030, 0x4242, 0, 0, 0, 0];
        let rule = Rule::caller((Base::FramePointer, 16), Some((Base::FramePointer, 0))).unwrap();
        let (mut sp, mut bp) = (0x1008, 0x1010);
        let step = rule.apply(&mut sp, &mut bp, &mut reader(&words)).unwrap();
        assert!(matches!(step, Step::Caller(0x4242)));
        assert_eq!((sp, bp), (0x1020, 0x1030));
        // A null frame pointer ends the stack.
        let (mut sp, mut bp) = (0x1008, 0);
        let step = rule.apply(&mut sp, &mut bp, &mut reader(&words)).unwrap();
        assert!(matches!(step, Step::Root));
    }

    #[test]
    fn a_stack_pointer_rule_adds_and_keeps_bp() {
        let words = [0, 0, 0, 0x5151, 0, 0];
        let rule = Rule::caller((Base::StackPointer, 24), None).unwrap();
        let (mut sp, mut bp) = (0x1008, 0x7777);
        let step = rule.apply(&mut sp, &mut bp, &mut reader(&words)).unwrap();
        assert!(matches!(step, Step::Caller(0x5151)));
        assert_eq!((sp, bp), (0x1020, 0x7777));
        // A rule that would move down the stack is an error, not a frame.
        let down = Rule::caller((Base::StackPointer, -8), None).unwrap();
        assert!(down.apply(&mut sp, &mut bp, &mut reader(&words)).is_err());
        // So is a read outside the stack.
        let far = Rule::caller((Base::StackPointer, 4096), None).unwrap();
        assert!(far.apply(&mut sp, &mut bp, &mut reader(&words)).is_err());
    }

    #[test]
    fn a_saved_frame_pointer_is_found_from_either_register() {
        // CFA = sp + 32; the caller's bp saved at bp - 8 (a frame whose
        // tables name both registers).
        let rule = Rule::caller((Base::StackPointer, 32), Some((Base::FramePointer, -8))).unwrap();
        let words = [0, 0, 0, 0x1111, 0x6262, 0, 0, 0];
        let (mut sp, mut bp) = (0x1008, 0x1020);
        let step = rule.apply(&mut sp, &mut bp, &mut reader(&words)).unwrap();
        assert!(matches!(step, Step::Caller(0x6262)));
        assert_eq!((sp, bp), (0x1028, 0x1111));
        // Same register: kept relative to the CFA, however large the frame.
        let big = Rule::caller(
            (Base::StackPointer, 100_000),
            Some((Base::StackPointer, 99_984)),
        );
        assert_eq!(big.map(|rule| rule.bp_offset), Some(-16));
        // An offset too large for a slot of its own register is refused.
        assert_eq!(
            Rule::caller(
                (Base::FramePointer, 16),
                Some((Base::StackPointer, 100_000))
            ),
            None
        );
    }

    #[test]
    fn offsets_are_told_apart_by_register() {
        assert_eq!(
            register_plus_offset(PROBE_SP + 40),
            Some((Base::StackPointer, 40))
        );
        assert_eq!(
            register_plus_offset(PROBE_BP - 16),
            Some((Base::FramePointer, -16))
        );
        assert_eq!(register_plus_offset(LOADED | 8), None);
    }

    #[test]
    fn the_cache_misses_on_another_address_or_module_list() {
        let mut cache = RuleCache::new(64);
        let rule = Rule::caller((Base::StackPointer, 8), None).unwrap();
        cache.insert(0x4000_1234, 1, rule);
        assert_eq!(cache.reader(1).get(0x4000_1234), Some(rule));
        assert_eq!(cache.reader(2).get(0x4000_1234), None);
        assert_eq!(cache.reader(1).get(0x4000_1235), None);
    }
}
