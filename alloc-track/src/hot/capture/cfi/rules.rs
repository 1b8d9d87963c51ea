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
//! some results without a rule at all) but *observed*: [`derive`](fn@derive) has
//! framehop unwind the frame once from made-up registers, with a stack
//! whose every word holds its own address, marked. Where the results land
//! says which register each came from and at what offset; anything that is
//! not such a sum (a CFA read from memory, a realigned stack) is refused,
//! and the walk leaves that frame, and that capture, to the unwinder. The
//! periodic comparison with the unwinder (`trust.rs`) checks the whole.

use framehop::x86_64::UnwindRegsX86_64;
use framehop::{FrameAddress, Unwinder};

use framehop::x86_64::CacheX86_64;

use super::stack_range::StackRange;
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
/// registers, from the slot's own register. Flat integers and flag bits,
/// so that applying one is a few loads and adds with no matching on
/// variants, and so that a cache entry (`cache.rs`) is 16 bytes.
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
/// The flags [`Rule::apply`] leaves to [`Rule::apply_general`].
const RARE: u8 = ROOT | BP_SAVED_FROM_SP | BP_SAVED_FROM_BP;

impl Rule {
    pub(super) const ROOT: Rule = Rule {
        cfa_offset: 0,
        bp_offset: 0,
        flags: ROOT,
    };

    /// The rule whose CFA is `cfa` and whose caller's frame pointer was
    /// saved at `saved_bp` (both as a register and an offset), if its
    /// offsets fit.
    pub(super) fn caller(cfa: (Base, i32), saved_bp: Option<(Base, i32)>) -> Option<Rule> {
        let mut flags = if cfa.0 == Base::FramePointer {
            CFA_FROM_BP
        } else {
            0
        };
        // Kept: `apply` reads the return address's word in its place.
        let mut bp_offset = -8;
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

    /// Whether the frame has no caller (`apply_general` gives
    /// [`Step::Root`] for it, whatever the registers).
    #[inline(always)]
    pub(super) fn is_root(&self) -> bool {
        self.flags & ROOT != 0
    }

    /// Unwinds one frame of the walk's loop (every frame but the first)
    /// from `old_sp` and `old_bp`, reading `stack`, where the rule and the
    /// stack are the usual: the caller's return address, stack and frame
    /// pointers. `None`: leave this frame to [`Rule::apply_general`],
    /// which gives the result for every rule.
    ///
    /// The shapes nearly every frame has (the CFA from either register,
    /// the frame pointer kept or saved a few words below the CFA) take one
    /// test of the flags, two conditional moves and the bounds checks; the
    /// rest (a root, a frame pointer saved relative to the other register,
    /// a null word, a failed check) is declined. The caller guarantees
    /// `old_sp >= stack.low + 8` (true of every caller's stack pointer a
    /// step gives): then a CFA above `old_sp` and at most
    /// [`StackRange::return_address_limit`] puts the return address's
    /// word inside the stack, with no other check.
    #[inline(always)]
    pub(super) fn apply(
        &self,
        old_sp: u64,
        old_bp: u64,
        stack: StackRange,
    ) -> Option<(u64, u64, u64)> {
        let flags = self.flags;
        if flags & RARE != 0 {
            return None;
        }
        // A branch, not a conditional move (the early return keeps the
        // compiler from making it one): a predicted branch lets the CFA's
        // addition start as soon as the offset is loaded, where a move
        // would wait for the flags too, on the chain of dependent loads
        // that every frame extends (measured: 8% slower a frame).
        let cfa_base = if flags & CFA_FROM_BP != 0 {
            // A null frame pointer is a root, for `apply_general`.
            if old_bp == 0 {
                return None;
            }
            old_bp
        } else {
            old_sp
        };
        let cfa = cfa_base.wrapping_add_signed(i64::from(self.cfa_offset));
        if cfa <= old_sp || cfa > stack.return_address_limit() {
            return None;
        }
        // Where the frame pointer is kept, `bp_offset` is -8 (see
        // `caller`): the slot is the return address's word, read for
        // nothing. Reading it either way makes the choice below a
        // conditional move: a branch on it, which depends on each frame's
        // shape, was mispredicted at a third of the frames.
        let slot = cfa.wrapping_add_signed(i64::from(self.bp_offset));
        if !stack.holds(slot) {
            return None;
        }
        // SAFETY: checked just above.
        let saved_bp = unsafe { stack.read_unchecked(slot) };
        let new_bp = select_if_saved(flags, saved_bp, old_bp);
        // SAFETY: `cfa - 8 > old_sp - 8 >= stack.low` (see above) and
        // `cfa <= return_address_limit`: the word lies in the stack.
        let return_address = unsafe { stack.read_unchecked(cfa - 8) };
        (return_address != 0).then_some((return_address, cfa, new_bp))
    }

    /// [`Rule::apply`] for the capture's first frame, whose stack pointer
    /// is `stack.low` itself (not a word above it, as `apply` needs): the
    /// fast path run over the stack widened by the word below `low` (the
    /// return address of the call into the walk, mapped), its result kept
    /// only where every word it read lies at or above `low`, as
    /// [`Rule::apply_general`] reads. `None`: leave the frame to that.
    #[inline(always)]
    pub(super) fn apply_first(
        &self,
        sp: u64,
        bp: u64,
        stack: StackRange,
    ) -> Option<(u64, u64, u64)> {
        let widened = stack.widened()?;
        let (return_address, cfa, new_bp) = self.apply(sp, bp, widened)?;
        let slot = cfa.wrapping_add_signed(i64::from(self.bp_offset));
        (cfa >= stack.low() + 8 && slot >= stack.low()).then_some((return_address, cfa, new_bp))
    }

    /// Unwinds one frame from `old_sp` and `old_bp`, reading `stack`, for
    /// every rule and register values: the capture's first frame, and
    /// whatever [`Rule::apply`] does not handle itself. Err: the stack
    /// cannot be read or does not climb; the walk gives up.
    #[inline(never)]
    pub(super) fn apply_general(
        self,
        old_sp: u64,
        old_bp: u64,
        stack: StackRange,
    ) -> Result<Step, ()> {
        let flags = self.flags;
        if flags & ROOT != 0 {
            return Ok(Step::Root);
        }
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
            stack.read(bp_slot_base.wrapping_add_signed(i64::from(self.bp_offset)))?
        } else {
            old_bp
        };
        let return_address = stack.read(cfa - 8)?;
        if return_address == 0 {
            return Ok(Step::Root);
        }
        Ok(Step::Caller {
            return_address,
            sp: cfa,
            bp: new_bp,
        })
    }
}

/// `if flags & BP_SAVED != 0 { saved } else { kept }`, as a conditional
/// move: the compiler turns the plain `if` into a branch, which depends on
/// each frame's shape and was mispredicted at a third of the frames of the
/// bench's real crates (a million times in its short run).
#[inline(always)]
fn select_if_saved(flags: u8, saved: u64, kept: u64) -> u64 {
    #[cfg(not(miri))]
    {
        const _: () = assert!(BP_SAVED == 4);
        let mut chosen = kept;
        // SAFETY: register arithmetic only: no memory, no stack.
        unsafe {
            std::arch::asm!(
                "test {flags}, 4",
                "cmovnz {chosen}, {saved}",
                flags = in(reg_byte) flags,
                saved = in(reg) saved,
                chosen = inout(reg) chosen,
                options(pure, nomem, nostack),
            );
        }
        chosen
    }
    #[cfg(miri)]
    if flags & BP_SAVED != 0 {
        saved
    } else {
        kept
    }
}

/// Where a step ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// The caller's return address, stack pointer and frame pointer.
    Caller {
        return_address: u64,
        sp: u64,
        bp: u64,
    },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up stack: `words`, each either a plain value or, where
    /// `Stack::at` made it, the address of another word.
    struct Stack {
        words: Vec<u64>,
    }

    impl Stack {
        fn new(len: usize) -> Self {
            Stack {
                words: vec![0; len],
            }
        }

        /// The address of word `index` (`index` may lie outside).
        fn at(&self, index: i64) -> u64 {
            (self.words.as_ptr() as u64).wrapping_add_signed(index * 8)
        }

        fn range(&self) -> StackRange {
            StackRange::new(self.at(0), self.at(self.words.len() as i64))
        }

        /// `rule` applied from `sp` and `bp`: the caller's return address,
        /// stack and frame pointers, `None` at a root. Checks that the
        /// walk's fast path gives what the general one does, where it may
        /// be used (`sp` at least a word above the stack's start).
        fn step(&self, rule: Rule, sp: u64, bp: u64) -> Result<Option<(u64, u64, u64)>, ()> {
            let general = rule.apply_general(sp, bp, self.range());
            // The first frame's variant, from the stack's start, likewise.
            // (The word below the start stands in for the walk's mapped
            // return address: `words[0]` is kept as a guard.)
            if sp == self.at(1) {
                let inner = StackRange::new(self.at(1), self.at(self.words.len() as i64));
                let general_first = rule.apply_general(sp, bp, inner);
                if let Some((return_address, sp, bp)) = rule.apply_first(sp, bp, inner) {
                    let step = Step::Caller {
                        return_address,
                        sp,
                        bp,
                    };
                    assert_eq!(general_first, Ok(step), "first frame: {rule:?}");
                }
            }
            // Where the fast path gives a frame, it is the general one's.
            // (Where it declines, the walk uses the general one.)
            // Its precondition: `sp` at least a word above the stack's start.
            let fast = (sp >= self.at(1))
                .then(|| rule.apply(sp, bp, self.range()))
                .flatten();
            if let Some((return_address, sp, bp)) = fast {
                let step = Step::Caller {
                    return_address,
                    sp,
                    bp,
                };
                assert_eq!(general, Ok(step), "{rule:?}");
            }
            general.map(|step| match step {
                Step::Caller {
                    return_address,
                    sp,
                    bp,
                } => Some((return_address, sp, bp)),
                Step::Root => None,
            })
        }
    }

    #[test]
    fn a_frame_pointer_rule_follows_the_chain() {
        // [bp] = caller's bp, [bp + 8] = return address.
        let mut stack = Stack::new(8);
        (stack.words[2], stack.words[3]) = (stack.at(6), 0x4242);
        let rule = Rule::caller((Base::FramePointer, 16), Some((Base::FramePointer, 0))).unwrap();
        assert_eq!(
            stack.step(rule, stack.at(1), stack.at(2)),
            Ok(Some((0x4242, stack.at(4), stack.at(6))))
        );
        // A null frame pointer ends the stack.
        assert_eq!(stack.step(rule, stack.at(1), 0), Ok(None));
    }

    #[test]
    fn a_stack_pointer_rule_adds_and_keeps_bp() {
        let mut stack = Stack::new(6);
        stack.words[3] = 0x5151;
        let rule = Rule::caller((Base::StackPointer, 24), None).unwrap();
        assert_eq!(
            stack.step(rule, stack.at(1), 0x7777),
            Ok(Some((0x5151, stack.at(4), 0x7777)))
        );
        // A rule that would move down the stack is an error, not a frame.
        let down = Rule::caller((Base::StackPointer, -8), None).unwrap();
        assert_eq!(stack.step(down, stack.at(4), 0x7777), Err(()));
        // So is a read outside the stack.
        let far = Rule::caller((Base::StackPointer, 4096), None).unwrap();
        assert_eq!(stack.step(far, stack.at(4), 0x7777), Err(()));
        // A null return address ends the stack.
        assert_eq!(stack.step(rule, stack.at(2), 0x7777), Ok(None));
    }

    #[test]
    fn a_saved_frame_pointer_is_found_from_either_register() {
        // CFA = sp + 32; the caller's bp saved at bp - 8 (a frame whose
        // tables name both registers).
        let rule = Rule::caller((Base::StackPointer, 32), Some((Base::FramePointer, -8))).unwrap();
        let mut stack = Stack::new(8);
        (stack.words[3], stack.words[4]) = (0x1111, 0x6262);
        assert_eq!(
            stack.step(rule, stack.at(1), stack.at(4)),
            Ok(Some((0x6262, stack.at(5), 0x1111)))
        );
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

    /// The fast path of `apply` against the general one (`step` compares
    /// them) over every shape of rule, from registers inside, at the edge
    /// of and outside the stack, over stacks with null words.
    #[test]
    fn the_fast_path_agrees_with_the_general_one() {
        let mut stack = Stack::new(16);
        for i in 0..16 {
            // Null words here and there, the others pointing further up.
            stack.words[i] = if i % 5 == 4 {
                0
            } else {
                stack.at(i as i64 * 3)
            };
        }
        let bases = [Base::StackPointer, Base::FramePointer];
        let offsets = [-24, -8, 0, 4, 8, 16, 24, 40, 120, 200];
        let registers = [-1, 0, 1, 2, 7, 15, 16, 500].map(|index| stack.at(index));
        let mut rules = vec![Rule::ROOT];
        for cfa_base in bases {
            for cfa_offset in offsets {
                rules.extend(Rule::caller((cfa_base, cfa_offset), None));
                for saved_base in bases {
                    for saved_offset in offsets {
                        let saved = Some((saved_base, saved_offset));
                        rules.extend(Rule::caller((cfa_base, cfa_offset), saved));
                    }
                }
            }
        }
        let (mut outcomes, mut fast) = ([0; 3], 0);
        for &rule in &rules {
            for sp in registers {
                for bp in registers.into_iter().chain([0]) {
                    let outcome = stack.step(rule, sp, bp);
                    if sp >= stack.at(1) && rule.apply(sp, bp, stack.range()).is_some() {
                        fast += 1;
                    }
                    outcomes[match outcome {
                        Ok(Some(_)) => 0,
                        Ok(None) => 1,
                        Err(()) => 2,
                    }] += 1;
                }
            }
        }
        // Every kind of outcome was compared, many times.
        assert!(outcomes.iter().all(|&count| count > 100), "{outcomes:?}");
        // The first frame's variant gives frames too.
        let inner = StackRange::new(stack.at(1), stack.at(16));
        let first_frames = rules
            .iter()
            .filter(|rule| rule.apply_first(stack.at(1), stack.at(2), inner).is_some())
            .count();
        assert!(first_frames > 10, "{first_frames}");
        // And the fast path gave many of the frames, for each shape.
        assert!(fast > 1000, "{fast} of {outcomes:?}");
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
}
