//! Putting a dump file in place: never a partial file under the real name,
//! never two writers in one temporary file, and never a symbolic link,
//! named pipe or device destroyed because it sat where the dump goes.
//!
//! The steps, in order:
//!
//! 1. **Where.** Symbolic links are followed to the file they name, so the
//!    dump replaces the link's target and the link stays a link (a
//!    dangling link gets its target created, as `echo > link` would). A
//!    path that exists and is not a regular file (directory, FIFO, socket,
//!    device) is refused with [`DumpError::NotARegularFile`]: renaming over
//!    it would unlink a pipe its reader is blocked on, or, as root, turn
//!    `/dev/null` into a JSON file.
//! 2. **A temporary file of its own**, beside the destination so that the
//!    rename stays within one file system: `.NAME.tmp-PID-N`, where `N`
//!    counts saves within the process (so threads, and saves in one
//!    thread, never share one), created with `O_EXCL` so that it is never
//!    someone else's file. If `NAME` exists, the temporary file gets its
//!    permissions (a dump kept private stays private).
//! 3. **Written, flushed and `fsync`ed**, then **renamed** over `NAME`: a
//!    reader sees the old complete file or the new complete file, and
//!    after a power cut the new name never points at unwritten blocks.
//!    The directory is then `fsync`ed too, where the platform allows, so
//!    that the rename itself is durable.
//! 4. **Clean-up.** Temporary files of earlier saves to the same `NAME`
//!    whose process no longer exists (killed mid-dump) are removed. A
//!    file whose process is alive, or cannot be checked, is left alone;
//!    so are those of this process, whose other threads may be writing
//!    them.
//!
//! What is not prevented: a path replaced by something else between the
//! check in step 1 and the rename (the check and the rename cannot be one
//! step); hard links to `NAME` keep the old contents, as with any atomic
//! replacement; a temporary file of a process in another PID namespace
//! (a container sharing the directory) may look dead and be removed.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::DumpError;
use crate::human::IoError;

/// How many symbolic links are followed before giving up, as Linux does.
const MAX_LINKS: usize = 40;

/// Numbers this process's temporary files, so that two saves never share
/// one even when they run at once.
static SAVES: AtomicU64 = AtomicU64::new(0);

/// Writes a file at `path` whose contents `contents` writes to the
/// (buffered) writer it is given, atomically: see the module documentation
/// for where the file goes, what is refused, and what is cleaned up.
/// `contents` may fail; the temporary file is then removed and `path` left
/// as it was.
pub(crate) fn write_atomically(
    path: &Path,
    contents: impl FnOnce(&mut dyn Write) -> Result<(), DumpError>,
) -> Result<(), DumpError> {
    let io_error = |source| DumpError::Io {
        path: Some(path.to_path_buf()),
        source,
    };
    let (target, existing) = destination(path)?;
    let Some(name) = target.file_name() else {
        return Err(io_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no file",
        )));
    };
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let (temp, file) = create_temp(dir, name).map_err(|e| io_error(in_dir(dir, e)))?;
    let mut temp = PendingTemp {
        path: temp,
        renamed: false,
    };
    let written = (|| {
        if let Some(permissions) = existing {
            file.set_permissions(permissions).map_err(io_error)?;
        }
        let mut out = BufWriter::new(&file);
        contents(&mut out).map_err(|e| e.with_path(path))?;
        out.flush().map_err(io_error)?;
        drop(out);
        file.sync_all().map_err(io_error)?;
        fs::rename(&temp.path, &target).map_err(io_error)?;
        temp.renamed = true;
        Ok(())
    })();
    drop(temp);
    if written.is_ok() {
        sync_directory(dir);
    }
    remove_stale_temps(dir, name);
    written
}

/// A temporary file not yet renamed into place: removed when dropped, so
/// that neither an error nor a panic in `contents` leaves it behind.
struct PendingTemp {
    path: PathBuf,
    renamed: bool,
}

impl Drop for PendingTemp {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Where the file goes: `path` with symbolic links followed, and the
/// permissions of the regular file already there, if any.
fn destination(path: &Path) -> Result<(PathBuf, Option<fs::Permissions>), DumpError> {
    let refuse = |file_type: fs::FileType| DumpError::NotARegularFile {
        path: path.to_path_buf(),
        found: describe(file_type),
    };
    let io_error = |source| DumpError::Io {
        path: Some(path.to_path_buf()),
        source,
    };
    // The kernel's view first: it follows links the loop below cannot,
    // such as `/dev/stdout` -> `/proc/self/fd/1` -> `pipe:[1234]`.
    match fs::metadata(path) {
        Ok(metadata) if !metadata.is_file() => return Err(refuse(metadata.file_type())),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e)),
    }
    let mut current = path.to_path_buf();
    for _ in 0..=MAX_LINKS {
        match fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                let link = fs::read_link(&current).map_err(io_error)?;
                // A relative target is relative to the link's directory;
                // `join` with an absolute one gives that one.
                current = match current.parent() {
                    Some(dir) => dir.join(link),
                    None => link,
                };
            }
            Ok(metadata) if metadata.is_file() => {
                return Ok((current, Some(metadata.permissions())))
            }
            Ok(metadata) => return Err(refuse(metadata.file_type())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((current, None)),
            Err(e) => return Err(io_error(e)),
        }
    }
    Err(io_error(io::Error::new(
        io::ErrorKind::InvalidInput,
        "too many levels of symbolic links",
    )))
}

/// What a non-regular file is, for the error message.
fn describe(file_type: fs::FileType) -> &'static str {
    if file_type.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
    }
    "not a regular file"
}

/// `.NAME.tmp-PID-N`: hidden, and telling which process wrote it.
fn temp_name(name: &OsStr, pid: u32, n: u64) -> OsString {
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".tmp-{pid}-{n}"));
    temp
}

/// The process that wrote `file_name`, if it is one of our temporary files
/// for `name`: `.NAME.tmp-PID-N`, or `.NAME.PID.tmp` as earlier versions
/// named them. The parts after
/// `NAME` must be digits, so another dump's temporary file (say for
/// `NAME.5`) never matches.
fn temp_owner(file_name: &OsStr, name: &OsStr) -> Option<u32> {
    let file_name = file_name.as_encoded_bytes();
    let rest = file_name
        .strip_prefix(b".")?
        .strip_prefix(name.as_encoded_bytes())?
        .strip_prefix(b".")?;
    let digits = |bytes: &[u8]| -> Option<u64> {
        if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(bytes).ok()?.parse().ok()
    };
    let pid = if let Some(current) = rest.strip_prefix(b"tmp-") {
        let dash = current.iter().position(|&b| b == b'-')?;
        digits(&current[dash + 1..])?;
        digits(&current[..dash])?
    } else {
        digits(rest.strip_suffix(b".tmp")?)?
    };
    u32::try_from(pid).ok()
}

/// Creates a temporary file of this process's own in `dir` for `name`.
fn create_temp(dir: &Path, name: &OsStr) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    let mut last_error = None;
    // A name can only be taken already if a dead process with this
    // process's id left it: the next number is free.
    for _ in 0..16 {
        let n = SAVES.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(temp_name(name, pid, n));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

/// Says which directory a temporary file could not be created in, and
/// says plainly when that directory does not exist.
fn in_dir(dir: &Path, error: io::Error) -> io::Error {
    let message = if error.kind() == io::ErrorKind::NotFound && !dir.is_dir() {
        format!("the directory {} does not exist", dir.display())
    } else {
        format!(
            "cannot create a file in {}: {}",
            dir.display(),
            IoError(&error)
        )
    };
    io::Error::new(error.kind(), message)
}

/// Makes the rename durable. Best effort: some platforms and file systems
/// cannot open or sync a directory, and the dump is in place either way.
/// (Miri cannot sync a directory and stops the test at the attempt.)
fn sync_directory(dir: &Path) {
    #[cfg(all(unix, not(miri)))]
    if let Ok(directory) = File::open(dir) {
        let _ = directory.sync_all();
    }
    #[cfg(any(not(unix), miri))]
    let _ = dir;
}

/// Removes the temporary files for `name` in `dir` left by processes that
/// no longer exist.
fn remove_stale_temps(dir: &Path, name: &OsStr) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = temp_owner(&entry.file_name(), name) else {
            continue;
        };
        if pid == me || process_may_exist(pid) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// False only when the system says no process `pid` exists.
fn process_may_exist(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return true;
        };
        if pid <= 0 {
            return true;
        }
        // SAFETY: signal 0 sends nothing; it only checks that `pid`
        // exists and may be signalled.
        if unsafe { libc::kill(pid, 0) } == 0 {
            return true;
        }
        // EPERM: it exists, as another user's.
        io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_tell_their_process_and_nothing_else_matches() {
        let name = OsStr::new("heap.json");
        let ours = temp_name(name, 4321, 7);
        assert_eq!(ours, ".heap.json.tmp-4321-7");
        assert_eq!(temp_owner(&ours, name), Some(4321));
        assert_eq!(
            temp_owner(OsStr::new(".heap.json.99.tmp"), name),
            Some(99),
            "the old name"
        );
        for other in [
            "heap.json",
            ".heap.json",
            ".heap.json.tmp-12",
            ".heap.json.tmp-12-",
            ".heap.json.tmp--3",
            ".heap.json.tmp-1x-3",
            ".heap.json.5.123.tmp",
            ".heap.json.tmp-5.tmp-1-2",
            ".heap.json.5.tmp-1-2",
            ".heap.jsonx.tmp-1-2",
            ".heap.json.tmp-99999999999-1",
        ] {
            assert_eq!(temp_owner(OsStr::new(other), name), None, "{other}");
        }
        // The temporary files of `heap.json.5` are not those of `heap.json`.
        let five = temp_name(OsStr::new("heap.json.5"), 12, 3);
        assert_eq!(temp_owner(&five, name), None);
    }
}
