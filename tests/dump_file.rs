//! Where a dump lands and what it never destroys: symbolic links are
//! followed, anything that is not a regular file is refused and left as it
//! was, concurrent saves to one path each leave a complete dump, and
//! temporary files of killed processes are cleaned up.
#![cfg(unix)]

mod common;

use std::alloc::System;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use alloc_track::dump::{Dump, DumpError};
use alloc_track::Tracker;
use common::file_names;

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

/// How long a save may take before the test calls it blocked.
const SAVE_DEADLINE: Duration = Duration::from_secs(60);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("alloc-track-file-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// Saves a snapshot to `path` on another thread, so that a save that
/// blocks (opening a FIFO for writing, say) fails the test instead of
/// hanging it.
fn save_with_watchdog(path: &Path) -> Result<(), DumpError> {
    let (sender, receiver) = mpsc::channel();
    let path = path.to_path_buf();
    thread::spawn(move || {
        let _ = sender.send(alloc_track::snapshot().save(&path));
    });
    receiver
        .recv_timeout(SAVE_DEADLINE)
        .expect("the save blocked")
}

/// The error is the typed refusal, one line naming the path.
fn assert_refused(result: Result<(), DumpError>, path: &Path, found: &str) {
    let error = result.expect_err("refused");
    let message = error.to_string();
    assert!(
        matches!(&error, DumpError::NotARegularFile { found: f, .. } if f.contains(found)),
        "{error:?}"
    );
    assert!(!message.contains('\n'), "{message}");
    assert!(
        message.starts_with(&format!("{}: ", path.display())),
        "{message}"
    );
    assert!(message.contains("not a regular file"), "{message}");
}

#[test]
fn a_symbolic_link_stays_a_link_and_its_target_gets_the_dump() {
    let dir = temp_dir("symlink");
    std::fs::create_dir(dir.join("real")).unwrap();
    let target = dir.join("real/heap.json");
    std::fs::write(&target, "old contents").unwrap();
    let link = dir.join("heap.json");
    std::os::unix::fs::symlink("real/heap.json", &link).unwrap();

    save_with_watchdog(&link).unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("real/heap.json")
    );
    assert_eq!(Dump::load(&target).unwrap().pid, std::process::id());
    // The temporary file went beside the target, and is gone.
    assert_eq!(file_names(&dir.join("real")), ["heap.json"]);

    // A link to a link to a file that does not exist yet: the file is
    // created where the chain ends.
    let dangling = dir.join("later.json");
    std::os::unix::fs::symlink("hop.json", &dangling).unwrap();
    std::os::unix::fs::symlink(dir.join("real/new.json"), dir.join("hop.json")).unwrap();
    save_with_watchdog(&dangling).unwrap();
    assert!(std::fs::symlink_metadata(&dangling)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(Dump::load(dir.join("real/new.json")).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_fifo_is_refused_and_left_in_place() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("heap.json");
    // SAFETY: a valid C string; creates a FIFO in our own directory.
    assert_eq!(unsafe { libc::mkfifo(c_path(&fifo).as_ptr(), 0o644) }, 0);
    // A reader, as `cat heap.json` would be: non-blocking, so that the
    // test itself never waits for a writer.
    // SAFETY: a valid C string; the descriptor is closed below.
    let reader = unsafe { libc::open(c_path(&fifo).as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    assert!(reader >= 0);

    assert_refused(save_with_watchdog(&fifo), &fifo, "FIFO");
    assert_refused(alloc_track::dump(&fifo), &fifo, "FIFO");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(file_names(&dir), ["heap.json"], "no temporary file left");
    // And through a symbolic link: the link's target is what counts.
    let link = dir.join("link.json");
    std::os::unix::fs::symlink("heap.json", &link).unwrap();
    assert_refused(save_with_watchdog(&link), &link, "FIFO");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    // SAFETY: our own descriptor, closed once.
    unsafe { libc::close(reader) };
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_socket_and_a_device_node_are_refused_and_left_in_place() {
    let dir = temp_dir("special");
    let socket = dir.join("socket.json");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    assert_refused(save_with_watchdog(&socket), &socket, "socket");
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());

    // A copy of /dev/null (character device 1:3); only root may make one.
    let device = dir.join("null.json");
    // SAFETY: a valid C string; creates a node in our own directory.
    let made = unsafe {
        libc::mknod(
            c_path(&device).as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3),
        )
    };
    if made == 0 {
        assert_refused(save_with_watchdog(&device), &device, "character device");
        assert!(std::fs::symlink_metadata(&device)
            .unwrap()
            .file_type()
            .is_char_device());
    } else {
        println!("not checked: cannot make a device node here (not root)");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_directory_a_missing_one_and_an_unwritable_one_give_one_clear_line() {
    let dir = temp_dir("errors");
    // The path is a directory.
    let error = save_with_watchdog(&dir).unwrap_err();
    assert!(
        matches!(
            &error,
            DumpError::NotARegularFile {
                found: "a directory",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(dir.is_dir());

    // Its directory does not exist.
    let missing = dir.join("no/such/heap.json");
    let message = save_with_watchdog(&missing).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}: the directory {} does not exist",
            missing.display(),
            dir.join("no/such").display()
        )
    );

    // Its directory cannot be written to. Root may write anywhere, so as
    // root the directory is one of sysfs's, where no one can create files.
    let locked = dir.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unwritable = if root {
        PathBuf::from("/sys/alloc-track-test.json")
    } else {
        locked.join("heap.json")
    };
    if !root || Path::new("/sys/kernel").is_dir() {
        let message = save_with_watchdog(&unwritable).unwrap_err().to_string();
        let parent = unwritable.parent().unwrap().display().to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(
            message.starts_with(&format!(
                "{}: cannot create a file in {parent}: ",
                unwritable.display()
            )),
            "{message}"
        );
        assert!(!unwritable.exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Eight threads save to one path at once while a ninth reads it in a
/// loop: every save succeeds and every read parses.
#[test]
fn concurrent_saves_to_one_path_each_leave_a_complete_dump() {
    const SAVERS: usize = 8;
    const SAVES_EACH: usize = 12;
    let dir = temp_dir("concurrent");
    let path = dir.join("heap.json");
    alloc_track::snapshot().save(&path).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (done, reads, path) = (done.clone(), reads.clone(), path.clone());
        thread::spawn(move || {
            let mut failures = Vec::new();
            // At least one read after the savers finish, so that a
            // reader starved by the savers still checks something.
            loop {
                let finished = done.load(Ordering::Acquire);
                if let Err(error) = Dump::load(&path) {
                    failures.push(error.to_string());
                }
                reads.fetch_add(1, Ordering::Relaxed);
                if finished {
                    return failures;
                }
            }
        })
    };
    let savers: Vec<_> = (0..SAVERS)
        .map(|_| {
            let path = path.clone();
            thread::spawn(move || {
                (0..SAVES_EACH)
                    .filter_map(|_| alloc_track::snapshot().save(&path).err())
                    .map(|error| error.to_string())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let save_failures: Vec<String> = savers
        .into_iter()
        .flat_map(|saver| saver.join().unwrap())
        .collect();
    done.store(true, Ordering::Release);
    let read_failures = reader.join().unwrap();
    assert!(save_failures.is_empty(), "{save_failures:#?}");
    assert!(read_failures.is_empty(), "{read_failures:#?}");
    println!(
        "{} reads, all complete dumps",
        reads.load(Ordering::Relaxed)
    );
    assert_eq!(file_names(&dir), ["heap.json"], "no temporary file left");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The id of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn temporary_files_of_dead_processes_are_removed_and_others_kept() {
    let dir = temp_dir("stale");
    let dead = dead_pid();
    // SAFETY: no preconditions.
    let parent = unsafe { libc::getppid() };
    let me = std::process::id();
    let stale = [
        format!(".heap.json.tmp-{dead}-0"),
        format!(".heap.json.tmp-{dead}-17"),
        // As versions before this one named them.
        format!(".heap.json.{dead}.tmp"),
    ];
    let kept = [
        // Live processes: init, and whoever started this test.
        ".heap.json.tmp-1-0".to_string(),
        format!(".heap.json.tmp-{parent}-3"),
        // This process's own: another thread may be writing it.
        format!(".heap.json.tmp-{me}-999999"),
        // Another dump's, and files that only look alike.
        format!(".other.json.tmp-{dead}-0"),
        format!(".heap.json.5.tmp-{dead}-0"),
        format!("heap.json.tmp-{dead}-0"),
    ];
    for name in stale.iter().chain(&kept) {
        std::fs::write(dir.join(name), "{\"partial").unwrap();
    }
    let path = dir.join("heap.json");
    save_with_watchdog(&path).unwrap();
    assert!(Dump::load(&path).is_ok());
    let mut expected: Vec<String> = kept.to_vec();
    expected.push("heap.json".to_string());
    expected.sort();
    assert_eq!(file_names(&dir), expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_dump_replacing_another_keeps_its_permissions() {
    let dir = temp_dir("mode");
    let path = dir.join("heap.json");
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    save_with_watchdog(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(Dump::load(&path).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}
