//! The loaded objects (the executable and its shared libraries) as
//! symbolization needs them: a cheap stamp that changes whenever an object
//! is loaded or unloaded, which object holds an address, and the name the
//! dynamic loader knows for an address.
//!
//! The `backtrace` crate reads the list of objects once, at its first
//! resolution, and never again (rust-lang/backtrace-rs#238): code in an
//! object `dlopen`ed later, or reloaded at another address, is unknown to
//! it, or worse, resolved with the debug info of whatever object sat there
//! before. This module is how the symbol cache notices.

/// Changes whenever an object is loaded or unloaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ObjectsStamp {
    adds: u64,
    subs: u64,
}

/// An object as the dynamic loader lists it: its load bias and its path
/// (empty for the executable).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Object {
    pub(crate) bias: usize,
    pub(crate) name: Vec<u8>,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use super::{Object, ObjectsStamp};
    use std::ffi::{c_int, c_void, CStr};

    /// glibc counts every load and unload in each entry it passes to the
    /// callback; the first entry is enough.
    pub(crate) fn stamp() -> ObjectsStamp {
        unsafe extern "C" fn first(
            info: *mut libc::dl_phdr_info,
            _size: usize,
            data: *mut c_void,
        ) -> c_int {
            // SAFETY: the loader passes a valid entry for the call; `data`
            // is the `ObjectsStamp` below, borrowed for the whole walk.
            unsafe {
                let stamp = &mut *(data as *mut ObjectsStamp);
                stamp.adds = (*info).dlpi_adds;
                stamp.subs = (*info).dlpi_subs;
            }
            1 // stop: one entry tells the counters
        }
        let mut stamp = ObjectsStamp::default();
        // SAFETY: `first` only writes through `data`, which points at
        // `stamp` and outlives the call.
        unsafe {
            libc::dl_iterate_phdr(Some(first), &mut stamp as *mut ObjectsStamp as *mut c_void)
        };
        stamp
    }

    struct Search {
        address: usize,
        all: Vec<Object>,
        found: Option<Object>,
    }

    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid entry whose program headers
        // and name live for the call; `data` is the `Search` below.
        unsafe {
            let search = &mut *(data as *mut Search);
            let info = &*info;
            let name = if info.dlpi_name.is_null() {
                Vec::new()
            } else {
                CStr::from_ptr(info.dlpi_name).to_bytes().to_vec()
            };
            let bias = info.dlpi_addr as usize;
            let object = Object { bias, name };
            if search.address != 0 && !info.dlpi_phdr.is_null() {
                let headers = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
                let inside = headers.iter().any(|h| {
                    let start = bias.wrapping_add(h.p_vaddr as usize);
                    h.p_type == libc::PT_LOAD
                        && start <= search.address
                        && search.address - start < h.p_memsz as usize
                });
                if inside {
                    search.found = Some(object);
                    return 1;
                }
            } else {
                search.all.push(object);
            }
            0
        }
    }

    fn walk(address: usize) -> Search {
        let mut search = Search {
            address,
            all: Vec::new(),
            found: None,
        };
        // SAFETY: `visit` only touches `search` through `data`, which
        // outlives the call.
        unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut Search as *mut c_void) };
        search
    }

    pub(crate) fn loaded() -> Vec<Object> {
        walk(0).all
    }

    pub(crate) fn containing(address: usize) -> Option<Object> {
        walk(address).found
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    use super::{Object, ObjectsStamp};

    // Without the loader's counters the list is taken as fixed, which is
    // what `backtrace` assumes everywhere.
    pub(crate) fn stamp() -> ObjectsStamp {
        ObjectsStamp::default()
    }
    pub(crate) fn loaded() -> Vec<Object> {
        Vec::new()
    }
    pub(crate) fn containing(_address: usize) -> Option<Object> {
        None
    }
}

pub(crate) use imp::{containing, loaded, stamp};

/// The name of the exported (dynamic) symbol whose code holds `address`,
/// from the dynamic loader's own tables: always current, but without file
/// and line, and only for functions the object exports. The symbol's size
/// is checked (glibc's `dladdr` checks it too, not every `dladdr` does):
/// the nearest exported symbol below a private function's address is
/// another function, and would be a wrong name.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn exported_symbol(address: usize) -> Option<String> {
    #[cfg(target_pointer_width = "64")]
    type Symbol = libc::Elf64_Sym;
    #[cfg(target_pointer_width = "32")]
    type Symbol = libc::Elf32_Sym;
    /// `dladdr1`'s request for the symbol table entry (`<dlfcn.h>`).
    const RTLD_DL_SYMENT: libc::c_int = 1;

    // SAFETY: an all-zero `Dl_info` is valid (null pointers).
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let mut entry: *mut libc::c_void = std::ptr::null_mut();
    // SAFETY: `dladdr1` only reads the address and fills `info` and
    // `entry` (a pointer to the symbol's entry in the object's table).
    let found = unsafe {
        libc::dladdr1(
            address as *const libc::c_void,
            &mut info,
            &mut entry,
            RTLD_DL_SYMENT,
        )
    };
    if found == 0 || info.dli_sname.is_null() || entry.is_null() {
        return None;
    }
    // SAFETY: with RTLD_DL_SYMENT, a non-null `entry` points at the
    // symbol's entry in the object's dynamic symbol table, mapped while the
    // object is loaded.
    let size = unsafe { (*(entry as *const Symbol)).st_size } as usize;
    let start = info.dli_saddr as usize;
    if address < start || address - start >= size {
        return None;
    }
    // SAFETY: `dli_sname` points at a NUL-terminated name in the object's
    // string table, which stays mapped while the object is loaded.
    let raw = unsafe { std::ffi::CStr::from_ptr(info.dli_sname) }.to_bytes();
    // `{:#}` drops a Rust name's `::h0123abcd` hash suffix.
    Some(format!("{:#}", backtrace::SymbolName::new(raw)))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn exported_symbol(_address: usize) -> Option<String> {
    None
}
