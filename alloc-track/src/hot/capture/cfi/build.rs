//! Building the CFI walker's module list from the loader's list of loaded
//! objects. Cold: runs at the first check and when code shows up in no
//! known module; allocates (untracked, the caller is busy) and maps.
//!
//! For each object: its executable `PT_LOAD` range is its code;
//! `PT_GNU_EH_FRAME` is its `.eh_frame_hdr` (the sorted index of its
//! unwind entries), whose `eh_frame_ptr` field gives where `.eh_frame`
//! starts. `.eh_frame` has no header of its own giving its size, so it is
//! taken up to the end of the segment holding it: the index finds each
//! entry by offset, and bytes after the last entry are never read.

use std::ops::Range;

use framehop::{ExplicitModuleSectionInfo, Module, Unwinder};

use std::sync::atomic::{AtomicU16, Ordering};

use super::{Copied, Modules, Tables};
use crate::hot::pages;

// ELF constants (from `elf.h`; the `libc` crate has them only for Android).
const PT_LOAD: u32 = 1;
const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
const PF_X: u32 = 1;
const PF_R: u32 = 4;

/// One loaded object, as the loader's list gave it.
struct Found {
    base: u64,
    code: Range<u64>,
    tables: Copied,
}

/// What the loader's iteration fills in.
struct Search<'a> {
    old: Option<&'a Modules>,
    found: Vec<Found>,
    loads: Option<(u64, u64)>,
}

/// A fresh list of every loaded object with unwind tables; copies from
/// `old` are reused where an object's tables are unchanged.
pub(super) fn build_modules(old: Option<&Modules>) -> Option<Modules> {
    let mut search = Search {
        old,
        found: Vec::new(),
        loads: None,
    };
    // SAFETY: the callback matches `dl_iterate_phdr`'s contract and uses
    // `data` only as the `Search` above, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each_object), std::ptr::addr_of_mut!(search).cast()) };
    let loads = search.loads?;
    if search.found.is_empty() {
        return None;
    }
    let mut tables = Tables::new();
    let mut code = Vec::with_capacity(search.found.len());
    let mut copies = Vec::with_capacity(search.found.len());
    for found in search.found {
        let base = found.base;
        // Wrapping, like the loader's own arithmetic: no overflow can panic.
        let relative = |start: u64, len: usize| {
            start.wrapping_sub(base)..start.wrapping_sub(base).wrapping_add(len as u64)
        };
        // ELF objects state addresses relative to a base of 0 (`base_svma`).
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: Some(relative(
                found.code.start,
                found.code.end.wrapping_sub(found.code.start) as usize,
            )),
            eh_frame_svma: Some(relative(
                found.tables.eh_frame_address,
                found.tables.eh_frame.len(),
            )),
            eh_frame: Some(found.tables.eh_frame),
            eh_frame_hdr_svma: Some(relative(found.tables.hdr_address, found.tables.hdr.len())),
            eh_frame_hdr: Some(found.tables.hdr),
            ..Default::default()
        };
        tables.add_module(Module::new(String::new(), found.code.clone(), base, info));
        code.push(found.code);
        copies.push(found.tables);
    }
    code.sort_by_key(|range| range.start);
    let generation = match old {
        Some(old) if keeps_every_object(old, &code, &copies) => old.generation,
        _ => NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
    };
    Some(Modules {
        tables,
        code,
        copies,
        loads,
        generation,
    })
}

/// Whether a list of `code` ranges and `copies` of tables still holds
/// every object of `old`, unchanged (same code range, tables reused from
/// `old`'s copies): then every rule derived under `old` still holds, for
/// addresses in those objects and nowhere else (rules are only derived
/// for addresses in a known object, and objects do not overlap), and the
/// new list can keep `old`'s generation, so that the threads' rule caches
/// survive a `dlopen`.
pub(super) fn keeps_every_object(old: &Modules, code: &[Range<u64>], copies: &[Copied]) -> bool {
    let same_copy = |a: &Copied, b: &Copied| {
        a.hdr_address == b.hdr_address
            && std::ptr::eq(a.hdr, b.hdr)
            && a.eh_frame_address == b.eh_frame_address
            && std::ptr::eq(a.eh_frame, b.eh_frame)
    };
    old.code.iter().all(|range| code.contains(range))
        && old
            .copies
            .iter()
            .all(|kept| copies.iter().any(|copy| same_copy(kept, copy)))
}

/// The generation of the next module list built: rule caches hold the
/// rules of one generation, so that a list built after a `dlclose`, or
/// after a `dlopen` that changed an object, makes every older rule a miss.
/// It wraps after 65,536 such rebuilds, by which time a stale rule that
/// matches is as unlikely as any wrong rule, and would be caught the same
/// way (the periodic check against the unwinder).
static NEXT_GENERATION: AtomicU16 = AtomicU16::new(1);

unsafe extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: the loader passes a valid entry whose program headers are an
    // array of `dlpi_phnum` entries; `data` is `build_modules`'s `Search`,
    // borrowed for the call.
    let (info, search, headers) = unsafe {
        let info = &*info;
        let headers = if info.dlpi_phdr.is_null() {
            &[][..]
        } else {
            std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum))
        };
        (info, &mut *data.cast::<Search>(), headers)
    };
    search.loads.get_or_insert((info.dlpi_adds, info.dlpi_subs));
    if let Some(found) = inspect(info.dlpi_addr, headers, search.old) {
        search.found.push(found);
    }
    0
}

/// An object's code range and a copy of its unwind tables, or `None` if it
/// has no usable tables. Called while the loader holds the object loaded.
fn inspect(base: u64, headers: &[libc::Elf64_Phdr], old: Option<&Modules>) -> Option<Found> {
    let code = headers
        .iter()
        .filter(|h| h.p_type == PT_LOAD && h.p_flags & PF_X != 0)
        .map(|h| segment(base, h.p_vaddr, h.p_memsz))
        .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))?;
    let index = headers.iter().find(|h| h.p_type == PT_GNU_EH_FRAME)?;
    let hdr_address = base.wrapping_add(index.p_vaddr);
    let hdr_len = usize::try_from(index.p_memsz).ok()?;
    if hdr_address.checked_add(index.p_memsz)? > readable_end(base, headers, hdr_address)? {
        return None;
    }
    // SAFETY: the range lies inside a readable, file-backed loaded segment
    // of an object the loader keeps loaded during this call.
    let hdr = unsafe { std::slice::from_raw_parts(hdr_address as *const u8, hdr_len) };
    let eh_frame_address = eh_frame_address(hdr, hdr_address)?;
    let eh_frame_end = readable_end(base, headers, eh_frame_address)?;
    let eh_frame_len = usize::try_from(eh_frame_end.checked_sub(eh_frame_address)?).ok()?;
    let reused = old.and_then(|old| {
        old.copies.iter().copied().find(|copy| {
            copy.hdr_address == hdr_address
                && copy.eh_frame_address == eh_frame_address
                && copy.eh_frame.len() == eh_frame_len
                && copy.hdr == hdr
        })
    });
    let tables = match reused {
        Some(tables) => tables,
        None => {
            // SAFETY: as for `hdr`: inside a readable loaded segment.
            let eh_frame =
                unsafe { std::slice::from_raw_parts(eh_frame_address as *const u8, eh_frame_len) };
            Copied {
                hdr_address,
                hdr: copy(hdr)?,
                eh_frame_address,
                eh_frame: copy(eh_frame)?,
            }
        }
    };
    Some(Found { base, code, tables })
}

/// The end of the readable, file-backed part of the loaded segment that
/// holds `address`.
fn readable_end(base: u64, headers: &[libc::Elf64_Phdr], address: u64) -> Option<u64> {
    headers
        .iter()
        .filter(|h| h.p_type == PT_LOAD && h.p_flags & PF_R != 0)
        .map(|h| segment(base, h.p_vaddr, h.p_filesz))
        .find(|segment| segment.contains(&address))
        .map(|segment| segment.end)
}

/// Where a segment of `size` bytes at `vaddr` lies in memory.
fn segment(base: u64, vaddr: u64, size: u64) -> Range<u64> {
    let start = base.wrapping_add(vaddr);
    start..start.wrapping_add(size)
}

/// Copies `bytes` into a mapping of the tracker's own, kept for the rest
/// of the process: unloading the object later cannot pull it away.
fn copy(bytes: &[u8]) -> Option<&'static [u8]> {
    let memory = pages::alloc_zeroed(bytes.len());
    if memory.is_null() {
        return None;
    }
    // SAFETY: `memory` is a fresh mapping of at least `bytes.len()` bytes,
    // apart from `bytes`, never unmapped, and written only here.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), memory, bytes.len());
        Some(std::slice::from_raw_parts(memory, bytes.len()))
    }
}

// DWARF pointer encodings (`DW_EH_PE_*`) that `.eh_frame_hdr` uses.
const DW_EH_PE_OMIT: u8 = 0xff;
const DW_EH_PE_INDIRECT: u8 = 0x80;
const DW_EH_PE_PCREL: u8 = 0x10;
const DW_EH_PE_DATAREL: u8 = 0x30;

/// Where `.eh_frame` starts, from the `eh_frame_ptr` field of the
/// `.eh_frame_hdr` whose bytes are `hdr`, mapped at `hdr_address`.
///
/// The header is `version` (1), `eh_frame_ptr_enc`, `fde_count_enc`,
/// `table_enc`, then `eh_frame_ptr` in the first encoding: in practice a
/// signed 32-bit offset from the field itself (`pcrel | sdata4`, 0x1b).
pub(super) fn eh_frame_address(hdr: &[u8], hdr_address: u64) -> Option<u64> {
    let [1, encoding, _, _, field @ ..] = hdr else {
        return None;
    };
    if *encoding == DW_EH_PE_OMIT || encoding & DW_EH_PE_INDIRECT != 0 {
        return None;
    }
    fn bytes<const N: usize>(field: &[u8]) -> Option<[u8; N]> {
        field.get(..N)?.try_into().ok()
    }
    let value = match encoding & 0x0f {
        0x00 | 0x04 => u64::from_le_bytes(bytes(field)?),
        0x02 => u64::from(u16::from_le_bytes(bytes(field)?)),
        0x03 => u64::from(u32::from_le_bytes(bytes(field)?)),
        0x0a => i64::from(i16::from_le_bytes(bytes(field)?)) as u64,
        0x0b => i64::from(i32::from_le_bytes(bytes(field)?)) as u64,
        0x0c => i64::from_le_bytes(bytes(field)?) as u64,
        // LEB128 and other forms are not used for this field.
        _ => return None,
    };
    let relative_to = match encoding & 0x70 {
        0x00 => 0,
        DW_EH_PE_PCREL => hdr_address.wrapping_add(4),
        DW_EH_PE_DATAREL => hdr_address,
        _ => return None,
    };
    Some(relative_to.wrapping_add(value))
}
