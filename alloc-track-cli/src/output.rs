//! Where a command's files go, with errors that name them.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// An output destination: a file, or standard output (`-o -`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Standard output.
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
}

impl Output {
    /// `-` means standard output, anything else a file.
    pub fn from_arg(arg: &Path) -> Output {
        if arg.as_os_str() == "-" {
            Output::Stdout
        } else {
            Output::File(arg.to_path_buf())
        }
    }

    /// Runs `write` on this destination. Standard output goes to `stdout`
    /// (errors become [`CliError::Stdout`]); a file is written through a
    /// buffer and removed again if writing fails, so that no half-written
    /// SVG or profile is left behind to be mistaken for a whole one.
    pub fn write_with<W: Write>(
        &self,
        stdout: &mut W,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), CliError> {
        match self {
            Output::Stdout => {
                write(stdout).map_err(CliError::Stdout)?;
                stdout.flush().map_err(CliError::Stdout)
            }
            Output::File(path) => write_file(path, write),
        }
    }
}

/// Writes a file through `write`, naming `path` in any error.
pub fn write_file(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), CliError> {
    if path.is_dir() {
        return Err(CliError::Output {
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a directory; give a file name",
            ),
        });
    }
    let file = File::create(path).map_err(CliError::output(path))?;
    let mut writer = BufWriter::new(file);
    let result = write(&mut writer).and_then(|()| writer.flush());
    drop(writer);
    if let Err(source) = result {
        let _ = fs::remove_file(path);
        return Err(CliError::Output {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(())
}

/// `dump`'s path with its extension replaced: `dumps/a.json` with
/// `suffix` `.svg` gives `dumps/a.svg`.
pub fn beside(dump: &Path, suffix: &str) -> PathBuf {
    let stem = dump
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "alloc-track".to_string());
    dump.with_file_name(format!("{stem}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_beside_the_dump_replace_the_extension() {
        assert_eq!(
            beside(Path::new("d/app.json"), ".svg"),
            PathBuf::from("d/app.svg")
        );
        assert_eq!(
            beside(Path::new("app"), ".peak.svg"),
            PathBuf::from("app.peak.svg")
        );
        assert_eq!(Output::from_arg(Path::new("-")), Output::Stdout);
    }
}
