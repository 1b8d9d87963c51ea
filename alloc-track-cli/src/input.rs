//! Where a command's dumps come from: a file, or standard input for `-`,
//! as in inferno and the other Unix tools.

use std::io;
use std::path::{Path, PathBuf};

use alloc_track::dump::{Dump, DumpError};

use crate::error::CliError;

/// How errors name standard input.
pub const STDIN_NAME: &str = "standard input";

/// True when `path` is `-`, standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Loads and validates the dump at `path`, or from standard input for `-`.
/// Every error names the file (or "standard input").
pub fn load(path: &Path) -> Result<Dump, CliError> {
    if is_stdin(path) {
        let stdin = io::stdin().lock();
        return Dump::from_reader(stdin)
            .map_err(|error| CliError::Dump(error.with_path(STDIN_NAME)));
    }
    Ok(Dump::load(path)?)
}

/// Refuses `-` given more than once: standard input can be read only once.
pub fn at_most_one_stdin<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Result<(), CliError> {
    if paths.into_iter().filter(|p| is_stdin(p)).count() > 1 {
        return Err(CliError::Dump(DumpError::Io {
            path: Some(PathBuf::from("-")),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "standard input can be read only once; give the other dumps as files",
            ),
        }));
    }
    Ok(())
}

/// How a dump's path is shown in titles and headings.
pub fn display_name(path: &Path) -> String {
    if is_stdin(path) {
        STDIN_NAME.to_string()
    } else {
        path.display().to_string()
    }
}
