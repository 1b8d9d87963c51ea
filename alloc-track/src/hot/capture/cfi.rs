//! The CFI walker: the binary's DWARF unwind tables (`.eh_frame`, the same
//! ones the platform unwinder reads), interpreted by `framehop` once per
//! return address and then replayed from a per-thread cache of compact
//! rules (`cfi/rules.rs`, `cfi/cache.rs`): a cached frame costs a hash probe, two
//! or three bounds-checked stack reads and a few additions, about 45 instructions
//! (libgcc's `_Unwind_Backtrace` re-finds and re-interprets every frame's
//! rules on every call, over 1,500 instructions a frame). This is the fast
//! walker for binaries built without frame pointers, the default.
//!
//! Linux with glibc on x86_64 only. Three pieces:
//!
//! - **The module list**, one per process: every loaded object's code range
//!   and unwind tables, found with `dl_iterate_phdr` and copied into the
//!   tracker's own mappings (so that a library unloaded later leaves stale
//!   but readable bytes, never a dangling pointer). Built once, at the first
//!   check, and published through an `AtomicPtr`: readers take no lock. A
//!   return address in no known module (a library loaded later) makes the
//!   capture fall back to the unwinder and, at most once per
//!   [`RECHECK_EVERY`] such misses, rebuilds the list if the loader's count
//!   of loaded objects moved. A replaced list is leaked, never freed: a
//!   capture on another thread may still be reading it, and nothing tells
//!   when it stops (a few hundred bytes per object plus the tables of the
//!   objects that changed, once per `dlopen` observed). After a `dlclose`,
//!   the unloaded library's copied tables stay in the list until a rebuild;
//!   code mapped at its old addresses meanwhile would be walked with stale
//!   rules: wrong frames at worst, never a crash (every stack read is
//!   bounds-checked), and the periodic check turns the walker off.
//! - **Rule caches per thread** (see [`Cache`]): the compact rules, and
//!   framehop's own cache for deriving them; created at the thread's first
//!   allocation and freed at its exit. A thread without them uses the
//!   unwinder.
//! - **The walk**: registers read where the capture starts, every stack
//!   read bounds-checked against the thread's stack, and any error from
//!   `framehop` ends the walk and hands the capture to the unwinder. It is
//!   compared with the unwinder at the first capture and periodically
//!   (`trust.rs`); the stacks must be identical.

use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

use framehop::x86_64::{CacheX86_64, UnwinderX86_64};
use framehop::{FrameAddress, MustNotAllocateDuringUnwind};

use super::trust::{self, Forced, Gate, Trust};
use super::{keep_the_walk, stack_bounds, unwind, CapturedStack, Pusher};
use crate::hot::config::{settled_mode, Mode};

/// Never allocates while unwinding: its DWARF evaluation works in
/// fixed-size storage inside the cache (a rule table that needs more fails,
/// and the capture goes to the unwinder).
type Policy = MustNotAllocateDuringUnwind;
type Tables = UnwinderX86_64<&'static [u8], Policy>;

/// A thread's caches: the compact rules the walk runs on ([`RuleCache`],
/// a few instructions per frame), and framehop's own cache, used only to
/// derive a rule the first time a return address is seen (framehop's
/// cache costs 33 KiB, mostly fixed storage for DWARF evaluation).
struct Cache {
    rules: RuleCache,
    framehop: CacheX86_64<Policy>,
}

impl Cache {
    /// Rule slots in full mode, which walks every allocation: 64 KiB, room
    /// for the return addresses of a program's busy code (on the benchmark
    /// of real crates, 1,024 slots missed one frame in ten and spent a
    /// third of the walk deriving rules again).
    const FULL_RULES: usize = 4096;
    /// Rule slots in the sampled mode, which walks a few allocations.
    const SAMPLED_RULES: usize = 256;

    fn new(rule_slots: usize) -> Self {
        Cache {
            rules: RuleCache::new(rule_slots),
            framehop: CacheX86_64::new_in(),
        }
    }
}

static TRUST: Trust = Trust::new();

/// The current module list; null until built. Lists are leaked, never
/// freed (see the module docs).
static MODULES: AtomicPtr<Modules> = AtomicPtr::new(std::ptr::null_mut());

/// Held (set) by the one thread building a list.
static BUILDING: AtomicBool = AtomicBool::new(false);

/// Return addresses found in no module, counted to rate-limit rebuilds.
static MISSES: AtomicU32 = AtomicU32::new(0);

/// The stack a CFI walk may use below the capturing frame, checked before
/// every walk (and before a thread's rule caches are made, which use as
/// much once): framehop and gimli evaluate DWARF rows in fixed-size arrays
/// of a few KiB each, which unoptimised code copies freely. Measured on a
/// thread with a small stack: under 16 KiB in a release build, between
/// 128 and 192 KiB in a debug one (`cargo test`'s default, where the
/// dependencies are not optimised either). A thread with less room left
/// uses the unwinder, a few KiB.
const STACK_NEEDED: usize = if cfg!(debug_assertions) {
    256 << 10
} else {
    64 << 10
};

/// A rebuild is considered at the first miss and then once per this many:
/// code outside every module (JIT code) must not make each capture ask the
/// loader.
const RECHECK_EVERY: u32 = 1024;

struct ThreadCfi {
    /// This thread's rule cache, or null. Only this thread uses it, while
    /// busy, so a capture has it to itself.
    cache: Cell<*mut Cache>,
    until_check: Cell<u32>,
}

// Const-initialised and without a destructor: reachable until the thread's
// very end. The cache is freed by the thread-totals exit destructor.
thread_local! {
    static THREAD_CFI: ThreadCfi = const {
        ThreadCfi { cache: Cell::new(std::ptr::null_mut()), until_check: trust::countdown() }
    };
}

/// One process's loaded objects, as the walker needs them.
struct Modules {
    tables: Tables,
    /// Code ranges, sorted by start: an address outside them all belongs to
    /// a module the list does not know.
    code: Vec<Range<u64>>,
    /// The copies of each object's unwind tables, reused by a rebuild.
    copies: Vec<Copied>,
    /// The loader's counts of objects added and removed when this list was
    /// built: unchanged counts mean a rebuild would find nothing new.
    loads: (u64, u64),
    /// Which list this is, for the rule caches' tags.
    generation: u16,
}

impl Modules {
    fn knows(&self, address: u64) -> bool {
        let after = self.code.partition_point(|range| range.start <= address);
        self.code
            .get(after.wrapping_sub(1))
            .is_some_and(|range| range.contains(&address))
    }
}

/// One object's unwind tables, copied into the tracker's own mappings.
#[derive(Clone, Copy)]
struct Copied {
    hdr_address: u64,
    hdr: &'static [u8],
    eh_frame_address: u64,
    eh_frame: &'static [u8],
}

/// Where a capture starts: the capturing function's own registers.
#[derive(Clone, Copy)]
struct Registers {
    ip: u64,
    sp: u64,
    bp: u64,
}

/// Reads the registers of the function this is inlined into. The unwind
/// tables describe, at `ip`, how to find the caller from this `sp` and
/// `bp`; `ip` is the instruction right after the `lea`, in the same
/// function, with the stack pointer unchanged.
#[inline(always)]
fn registers() -> Registers {
    let (ip, sp, bp): (u64, u64, u64);
    // SAFETY: reads three registers into variables; no memory is touched
    // and the stack pointer does not move.
    unsafe {
        std::arch::asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            ip = out(reg) ip,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    Registers { ip, sp, bp }
}

/// Captures with the CFI walker into `stack` (empty on entry) if it is
/// trusted and this thread has a cache; false means "use the unwinder".
/// Inlined into `capture`, so that the walk starts from the capturing
/// function's frame, as the frame-pointer walk does.
#[inline(always)]
pub(super) fn capture(stack: &mut CapturedStack) -> bool {
    let Ok(cache) = THREAD_CFI.try_with(|thread| thread.cache.get()) else {
        return false;
    };
    if cache.is_null() || !stack_bounds::has_room(STACK_NEEDED) {
        return false;
    }
    match TRUST.gate() {
        Gate::Walk => {}
        Gate::FirstCheck => return first_check(stack),
        Gate::Skip => return false,
    }
    let due = THREAD_CFI
        .try_with(|thread| trust::check_due(&thread.until_check))
        .unwrap_or(false);
    if due {
        return TRUST.verify(stack, compare);
    }
    walk(registers(), cache, stack)
}

/// Does this thread's one-time work: its rule cache (allocated here, where
/// the thread's start-up allocates anyway; the caller is busy, so it passes
/// untracked). Returns whether the walker's first check is still to be
/// done (by a capture: it builds the module list). Skipped once the walker
/// is distrusted, and on a thread without [`STACK_NEEDED`] to spare.
pub(super) fn prepare_thread() -> bool {
    // A thread with a small stack uses the unwinder rather than risk
    // overflowing it here or in a walk (it gets no cache, and without one
    // it never walks).
    if TRUST.distrusted() || !stack_bounds::has_room(STACK_NEEDED) {
        return false;
    }
    let missing = THREAD_CFI
        .try_with(|thread| thread.cache.get().is_null())
        .unwrap_or(false);
    if missing {
        let rule_slots = match settled_mode() {
            Some(Mode::Full) => Cache::FULL_RULES,
            _ => Cache::SAMPLED_RULES,
        };
        let cache = Box::into_raw(Box::new(Cache::new(rule_slots)));
        let _ = THREAD_CFI.try_with(|thread| thread.cache.set(cache));
    }
    matches!(TRUST.gate(), Gate::FirstCheck)
}

/// Frees this thread's rule cache, at its exit. Captures after this (the
/// thread's last thread-local destructors) find none and use the unwinder.
pub(super) fn release_thread() {
    let cache = THREAD_CFI
        .try_with(|thread| thread.cache.replace(std::ptr::null_mut()))
        .unwrap_or(std::ptr::null_mut());
    if !cache.is_null() {
        // SAFETY: the pointer came from `Box::into_raw` in
        // `prepare_thread`; the thread-local no longer holds it, so no
        // later capture on this thread can reach it, and no other thread
        // ever sees it.
        drop(unsafe { Box::from_raw(cache) });
    }
}

/// The first check; `ALLOC_TRACK_UNWIND=unwinder` turns the walker off.
#[cold]
fn first_check(stack: &mut CapturedStack) -> bool {
    TRUST.first_check(trust::forced() == Some(Forced::Unwinder), stack, compare)
}

/// Walks and unwinds from the same capture and returns whether the walk
/// agrees (`None` if it declined). Leaves the walk's stack in `stack` where
/// they agree, as every other walk of the same call gives it, else the
/// unwinder's.
#[inline(always)]
fn compare(stack: &mut CapturedStack) -> Option<bool> {
    let cache = THREAD_CFI
        .try_with(|thread| thread.cache.get())
        .unwrap_or(std::ptr::null_mut());
    first_modules();
    let mut walked = CapturedStack::new();
    let walked_ok = !cache.is_null() && walk(registers(), cache, &mut walked);
    unwind(stack);
    if !walked_ok {
        return None;
    }
    let start = agree(&walked, stack);
    keep_the_walk(stack, &walked, start);
    Some(start.is_some())
}

/// The walk agrees with the unwinder when, from the unwinder's first frame
/// on (the walk starts a frame or two deeper, inside the check), it has
/// exactly the unwinder's frames: the same return addresses in the same
/// order, ending at the same root, or running on past the unwinder's last
/// frame when the unwinder's stack filled up first. At least three frames
/// must be compared. Returns where in the walk the unwinder's first frame
/// is, if they agree.
fn agree(walked: &CapturedStack, unwound: &CapturedStack) -> Option<usize> {
    let unwound_frames = unwound.frames();
    let start = unwound_frames
        .first()
        .and_then(|first| walked.frames().iter().take(4).position(|ip| ip == first))?;
    let walked_frames = &walked.frames()[start..];
    // Both stop at the same root, or the one that filled up first stops
    // short of the other: the walk started a frame or two deeper, so it
    // fills up that much sooner.
    let lengths_agree = match (walked.truncated, unwound.truncated) {
        (false, false) => walked_frames.len() == unwound_frames.len(),
        (true, false) => walked_frames.len() <= unwound_frames.len(),
        (false, true) => walked_frames.len() >= unwound_frames.len(),
        (true, true) => true,
    };
    let overlap = walked_frames.len().min(unwound_frames.len());
    (overlap >= 3 && lengths_agree && walked_frames[..overlap] == unwound_frames[..overlap])
        .then_some(start)
}

/// Walks the stack from `start` with this thread's cache into `stack`
/// (empty on entry). False when the walk cannot be completed: the capture
/// then uses the unwinder.
#[inline(never)]
fn walk(start: Registers, cache: *mut Cache, stack: &mut CapturedStack) -> bool {
    walk_frames(start, cache, stack).is_some()
}

fn walk_frames(start: Registers, cache: *mut Cache, stack: &mut CapturedStack) -> Option<()> {
    let top = stack_bounds::top()? as u64;
    // SAFETY: a non-null list is leaked, never freed.
    let modules = unsafe { MODULES.load(Ordering::Acquire).as_ref() }?;
    // SAFETY: the cache is this thread's own (`prepare_thread`), freed only
    // by `release_thread` on this thread after the thread-local lets go of
    // it; the caller is busy, so no other capture on this thread runs until
    // this one returns.
    let cache = unsafe { cache.as_mut() }?;
    // Everything from the capturing frame up to the stack's top is this
    // thread's mapped stack; anything else ends the walk. (So is the word
    // just below, where the call into `walk` put its return address, which
    // `Rule::apply_first` may read.)
    let stack_range = StackRange::new(start.sp, top);
    // The first frame is `start.ip` itself, inside the capturing function:
    // like the frame-pointer walk, the stack starts at its return address.
    // Its rule is cached like any other (framehop derives it with the rules
    // of a first frame; its key, the instruction's start + 1, is never a
    // return address: see `rule_key`).
    let (mut sp, mut bp) = (start.sp, start.bp);
    cache.rules.follow(modules.generation);
    let rules = cache.rules.reader();
    let first = rules
        .get(rule_key(FrameAddress::from_instruction_pointer(start.ip)))
        .copied();
    let first = match first {
        Some(rule) => rule,
        None => new_rule(
            FrameAddress::from_instruction_pointer(start.ip),
            modules,
            cache,
        )?,
    };
    let first_step = match first.apply_first(sp, bp, stack_range) {
        Some((return_address, sp, bp)) => Step::Caller {
            return_address,
            sp,
            bp,
        },
        None => first.apply_general(sp, bp, stack_range).ok()?,
    };
    let return_address = match first_step {
        Step::Caller {
            return_address,
            sp: caller_sp,
            bp: caller_bp,
        } => {
            (sp, bp) = (caller_sp, caller_bp);
            return_address
        }
        Step::Root => return Some(()),
    };
    // From here on, frames are plain return addresses (never 0: a 0 ends
    // the walk in `apply`), looked up at their last byte of the call, and
    // `sp` is a CFA, at least a word above the capturing frame's: what
    // `apply`'s fast path needs.
    let mut cursor = Cursor {
        return_address,
        sp,
        bp,
    };
    stack.push_with(|stack| loop {
        // Frames whose rules are cached and take the fast path, in a loop
        // that calls nothing, so that all its values stay in registers;
        // the rest here, one frame at a time.
        let rule = match cursor.run(stack, rules, stack_range) {
            Halt::Full => return Some(()),
            // The end of nearly every stack: done without the call.
            Halt::Unusual(rule) if rule.is_root() => return Some(()),
            Halt::Unusual(rule) => rule,
            Halt::Uncached => new_rule(
                FrameAddress::from_return_address(cursor.return_address)?,
                modules,
                cache,
            )?,
        };
        match rule.apply_general(cursor.sp, cursor.bp, stack_range).ok()? {
            Step::Caller {
                return_address,
                sp,
                bp,
            } => {
                cursor = Cursor {
                    return_address,
                    sp,
                    bp,
                }
            }
            Step::Root => return Some(()),
        }
    })
}

/// Where the walk's loop is: the next frame's return address (never 0),
/// to push, and the stack and frame pointers to apply its rule to, the
/// stack pointer a CFA at least a word above the capturing frame's (as
/// [`Rule::apply`] needs).
struct Cursor {
    return_address: u64,
    sp: u64,
    bp: u64,
}

/// Why [`Cursor::run`] stopped.
enum Halt {
    /// The stack is full.
    Full,
    /// The frame's rule is not cached.
    Uncached,
    /// The frame's rule is for [`Rule::apply_general`].
    Unusual(Rule),
}

impl Cursor {
    /// Pushes frames while their rules are cached and take the fast path;
    /// stops at a frame pushed whose rule must be derived or applied by
    /// the general path, with the cursor on that frame.
    #[inline(never)]
    fn run(&mut self, stack: &mut Pusher<'_>, rules: RuleReader, range: StackRange) -> Halt {
        let (mut return_address, mut sp, mut bp) = (self.return_address, self.sp, self.bp);
        let halt = loop {
            if !stack.push(return_address as usize) {
                break Halt::Full;
            }
            let Some(rule) = rules.get(return_address) else {
                break Halt::Uncached;
            };
            let Some((caller, caller_sp, caller_bp)) = rule.apply(sp, bp, range) else {
                break Halt::Unusual(*rule);
            };
            (return_address, sp, bp) = (caller, caller_sp, caller_bp);
        };
        (self.return_address, self.sp, self.bp) = (return_address, sp, bp);
        halt
    }
}

/// The rule of a frame not in the cache yet, derived and cached.
/// `None` for an address in no known module (the unwinder, which knows
/// every loaded object, does better than framehop's guess there) or whose
/// rule is not a compact one.
#[cold]
#[inline(never)]
fn new_rule(frame: FrameAddress, modules: &'static Modules, cache: &mut Cache) -> Option<Rule> {
    let lookup = frame.address_for_lookup();
    if !modules.knows(lookup) {
        unknown_code(modules);
        return None;
    }
    let rule = rules::derive(frame, &modules.tables, &mut cache.framehop)?;
    cache.rules.insert(rule_key(frame), rule);
    Some(rule)
}

/// A return address in no known module: perhaps a library loaded since the
/// list was built.
#[cold]
#[inline(never)]
fn unknown_code(seen: &'static Modules) {
    if MISSES.fetch_add(1, Ordering::Relaxed) % RECHECK_EVERY != 0 {
        return;
    }
    if loader_counts() != Some(seen.loads) {
        rebuild_modules();
    }
}

/// Builds the first module list, if there is none yet. Not gated like a
/// rebuild: a check must not find the list missing because another thread
/// is building one. Of two lists built at once, the second is dropped
/// unseen (its copied tables stay mapped).
#[cold]
#[inline(never)]
fn first_modules() {
    if !MODULES.load(Ordering::Acquire).is_null() {
        return;
    }
    let Some(fresh) = build_modules(None) else {
        return;
    };
    let fresh = Box::into_raw(Box::new(fresh));
    if MODULES
        .compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // SAFETY: `fresh` came from `Box::into_raw` above and was never
        // published, so nothing else can hold it.
        drop(unsafe { Box::from_raw(fresh) });
    }
}

/// Builds a fresh module list and publishes it, unless another thread is
/// building one. Cold: runs the loader's iteration (which takes its lock,
/// as the unwinder's every call does) and allocates, untracked (the caller
/// is busy).
#[cold]
#[inline(never)]
fn rebuild_modules() {
    if BUILDING.swap(true, Ordering::Acquire) {
        return;
    }
    // SAFETY: a non-null list is leaked, never freed.
    let old = unsafe { MODULES.load(Ordering::Acquire).as_ref() };
    if let Some(fresh) = build_modules(old) {
        // Release: a reader that sees the pointer sees the list it points
        // to. The old list stays allocated (leaked) for readers still on it.
        MODULES.store(Box::into_raw(Box::new(fresh)), Ordering::Release);
    }
    BUILDING.store(false, Ordering::Release);
}

/// The loader's counts of objects added and removed so far.
fn loader_counts() -> Option<(u64, u64)> {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid entry; `data` is the
        // `Option<(u64, u64)>` below, borrowed for the call.
        unsafe {
            let info = &*info;
            *data.cast::<Option<(u64, u64)>>() = Some((info.dlpi_adds, info.dlpi_subs));
        }
        1 // the first object is enough
    }
    let mut counts: Option<(u64, u64)> = None;
    // SAFETY: the callback matches `dl_iterate_phdr`'s contract and writes
    // only through `data`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(first), std::ptr::addr_of_mut!(counts).cast()) };
    counts
}

/// True once the first check has decided for or against the walker.
pub(super) fn settled() -> bool {
    TRUST.settled()
}

/// True once the first check passed and no check has failed since.
pub(super) fn trusted() -> bool {
    TRUST.trusted()
}

mod build;
mod cache;
mod rules;
mod stack_range;
use build::build_modules;
use cache::{rule_key, RuleCache, RuleReader};
use rules::{Rule, Step};
use stack_range::StackRange;

#[cfg(test)]
mod tests;
