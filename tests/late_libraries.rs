//! Code in a library loaded after the first symbolization (`dlopen`), or
//! unloaded and replaced by another library at the same or another
//! address, is named in every later dump, never shown as a hex address nor
//! under the name of the code that was there before.
//!
//! The libraries are small C files compiled with the system's `cc` into a
//! temporary directory; each exports one function that calls back into
//! Rust to allocate, so that the allocation's stack holds the C frame. The
//! test is skipped, with a line saying so, where there is no `cc`.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::alloc::System;
use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;

use alloc_track::dump::Dump;
use alloc_track::{snapshot, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

type Allocate = extern "C" fn(usize) -> *mut c_void;
type CallsBack = unsafe extern "C" fn(Allocate, usize) -> *mut c_void;

/// The Rust side of the callback: a boxed slice of `size` bytes, tracked.
extern "C" fn allocate(size: usize) -> *mut c_void {
    Box::into_raw(vec![1u8; size].into_boxed_slice()) as *mut u8 as *mut c_void
}

fn free(block: *mut c_void, size: usize) {
    // SAFETY: `block` came from `allocate(size)` and is freed once.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(block as *mut u8, size)) });
}

/// A C library exporting `function`, which allocates through the callback
/// by way of a private helper placed after it, and is built so that both
/// frames stay on the stack (no tail call). The helper is not exported: it
/// must not take the exported function's name, the nearest one below it.
fn compile(dir: &Path, function: &str) -> Option<PathBuf> {
    let source = dir.join(format!("{function}.c"));
    let library = dir.join(format!("lib{function}.so"));
    std::fs::write(
        &source,
        format!(
            "#include <stddef.h>\n\
             typedef void *(*allocate_fn)(size_t);\n\
             static void *helper(allocate_fn allocate, size_t size);\n\
             void *{function}(allocate_fn allocate, size_t size) {{\n\
             \x20   void *block = helper(allocate, size);\n\
             \x20   __asm__ volatile(\"\" : : \"r\"(block) : \"memory\");\n\
             \x20   return block;\n\
             }}\n\
             static void *helper(allocate_fn allocate, size_t size) {{\n\
             \x20   void *block = allocate(size);\n\
             \x20   __asm__ volatile(\"\" : : \"r\"(block) : \"memory\");\n\
             \x20   return block;\n\
             }}\n"
        ),
    )
    .unwrap();
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O0", "-fno-omit-frame-pointer"])
        .arg("-fno-optimize-sibling-calls")
        .arg("-o")
        .arg(&library)
        .arg(&source)
        .status();
    match status {
        Ok(status) if status.success() => Some(library),
        Ok(status) => panic!("cc failed on {}: {status}", source.display()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => panic!("cannot run cc: {error}"),
    }
}

struct Library {
    handle: *mut c_void,
    function: CallsBack,
}

impl Library {
    fn open(path: &Path, function: &str) -> Library {
        let path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; the library has no constructors.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null(), "dlopen failed for {path:?}");
        let name = CString::new(function).unwrap();
        // SAFETY: `handle` is open; `name` is NUL-terminated.
        let symbol = unsafe { libc::dlsym(handle, name.as_ptr()) };
        assert!(!symbol.is_null(), "{function} not found");
        Library {
            handle,
            // SAFETY: the C function has exactly this signature.
            function: unsafe { std::mem::transmute::<*mut c_void, CallsBack>(symbol) },
        }
    }

    /// Allocates `size` bytes from inside the library.
    fn allocate(&self, size: usize) -> *mut c_void {
        // SAFETY: the library is open and the function calls `allocate`
        // once, returning its block.
        unsafe { (self.function)(allocate, size) }
    }

    /// The address range the library's code was loaded at, as an address
    /// inside it.
    fn code_address(&self) -> usize {
        self.function as usize
    }

    fn close(self) {
        // SAFETY: opened once above; nothing of it is used after this.
        assert_eq!(unsafe { libc::dlclose(self.handle) }, 0);
    }
}

/// The function names in the stack of the one site whose live bytes are
/// exactly `size`, read back from a dump saved to a file.
fn names_at_site_of(size: u64, path: &Path) -> Vec<String> {
    snapshot().save(path).unwrap();
    let dump = Dump::load(path).unwrap();
    let site = dump
        .sites
        .iter()
        .find(|site| site.live_bytes == size && site.live_blocks == 1)
        .unwrap_or_else(|| panic!("no site with {size} live bytes"));
    dump.stacks[site.stack as usize]
        .locations
        .iter()
        .flat_map(|&l| dump.locations[l as usize].frames.iter())
        .map(|frame| frame.function.clone())
        .collect()
}

#[test]
fn libraries_loaded_after_the_first_dump_are_named() {
    let dir =
        std::env::temp_dir().join(format!("alloc-track-late-libraries-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(first) = compile(&dir, "alloc_track_late_first") else {
        println!("skipped: no `cc` on this machine to build the test libraries");
        return;
    };
    let second = compile(&dir, "alloc_track_late_second").unwrap();
    let dump_path = dir.join("heap.json");

    // Symbolize once before any library is loaded: from here on the
    // `backtrace` crate's list of objects is fixed.
    let before = vec![0u8; 1111];
    let names = names_at_site_of(1111, &dump_path);
    assert!(
        names
            .iter()
            .any(|n| n.contains("libraries_loaded_after_the_first_dump_are_named")),
        "the test's own frame is not named: {names:?}"
    );

    // A library loaded after the first dump.
    let library = Library::open(&first, "alloc_track_late_first");
    let block = library.allocate(4242);
    let names = names_at_site_of(4242, &dump_path);
    assert_eq!(
        names
            .iter()
            .filter(|n| *n == "alloc_track_late_first")
            .count(),
        1,
        "the frame in a library loaded after the first dump is not named, or \
         its private helper took its name: {names:?}"
    );
    free(block, 4242);
    let first_address = library.code_address();
    library.close();

    // Another library where the first one was (the loader usually reuses
    // the range): its code must not keep the first one's name.
    let library = Library::open(&second, "alloc_track_late_second");
    let block = library.allocate(4343);
    let names = names_at_site_of(4343, &dump_path);
    assert!(
        names.iter().any(|n| n == "alloc_track_late_second")
            && !names.iter().any(|n| n == "alloc_track_late_first"),
        "the frame in the library loaded in place of another is misnamed \
         (first at {first_address:#x}, second at {:#x}): {names:?}",
        library.code_address()
    );
    free(block, 4343);

    // The first library again, under another name, while the second holds
    // its old range: loaded at a new address.
    let copy = dir.join("liballoc_track_late_first_again.so");
    std::fs::copy(&first, &copy).unwrap();
    let again = Library::open(&copy, "alloc_track_late_first");
    assert_ne!(again.code_address(), first_address);
    let block = again.allocate(4444);
    let names = names_at_site_of(4444, &dump_path);
    assert!(
        names.iter().any(|n| n == "alloc_track_late_first"),
        "the frame in a library reloaded at a new address is not named: {names:?}"
    );
    free(block, 4444);
    again.close();
    library.close();
    drop(before);
    let _ = std::fs::remove_dir_all(&dir);
}
