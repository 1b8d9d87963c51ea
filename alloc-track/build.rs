//! Names for the two platform conditions the stack walkers depend on, so
//! that the code says `#[cfg(stack_walk)]` instead of repeating them:
//!
//! - `stack_walk`: Linux with glibc on x86_64 or aarch64, where the tracker
//!   walks stacks itself (frame pointers, and the thread's stack bounds
//!   from glibc);
//! - `cfi_walk`: the same on x86_64 alone, where it also has the DWARF CFI
//!   walker for code built without frame pointers.
//!
//! Elsewhere captures go to the platform unwinder.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(stack_walk)");
    println!("cargo::rustc-check-cfg=cfg(cfi_walk)");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let glibc_linux = os == "linux" && env == "gnu";
    if glibc_linux && (arch == "x86_64" || arch == "aarch64") {
        println!("cargo::rustc-cfg=stack_walk");
    }
    if glibc_linux && arch == "x86_64" {
        println!("cargo::rustc-cfg=cfi_walk");
    }
}
