//! Why a command failed, as one line for a person.

use std::fmt;
use std::io;
use std::path::PathBuf;

use alloc_track::dump::DumpError;
use alloc_track::human::IoError;

use crate::input::display_name;

/// Why a command failed. `Display` is one line that names the file
/// concerned; `main` prints it after `alloc-track: `.
#[derive(Debug)]
#[non_exhaustive]
pub enum CliError {
    /// A dump could not be read or is not a valid dump.
    Dump(DumpError),
    /// An output file could not be created or written.
    Output {
        /// The file we tried to write.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// Writing to standard output failed (other than a closed pipe, which
    /// is not an error: see [`crate::run()`]).
    Stdout(io::Error),
    /// `--by peak` on a dump whose tracker kept no peak breakdown.
    NoPeakBreakdown {
        /// The dump concerned.
        path: PathBuf,
    },
    /// `--scope NAME` names no scope of the dump.
    NoSuchScope {
        /// The dump concerned.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The scopes the dump has.
        known: Vec<String>,
    },
    /// The chosen measure is zero everywhere, so there is nothing to draw.
    NothingToDraw {
        /// The dump concerned.
        path: PathBuf,
        /// What was weighed, e.g. "live bytes".
        measure: &'static str,
    },
    /// `run` could not start the program.
    Run {
        /// The program as given.
        program: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// Options that cannot go together (exit code 2, as for clap's own).
    Usage(String),
    /// A figure does not fit the output format (pprof values are `i64`).
    TooLarge {
        /// The dump concerned.
        path: PathBuf,
        /// Which figure and which format.
        what: String,
    },
}

impl CliError {
    /// Wraps an I/O error on the output file `path`.
    pub fn output(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CliError {
        let path = path.into();
        move |source| CliError::Output { path, source }
    }

    /// The process exit code for this error: 2 for bad usage, as clap
    /// uses, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// True when the error is only a closed standard output (`| head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

impl From<DumpError> for CliError {
    fn from(error: DumpError) -> Self {
        CliError::Dump(error)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Dump(error) => write!(f, "{error}"),
            CliError::Output { path, source } => {
                write!(
                    f,
                    "{}: cannot write: {}",
                    display_name(path),
                    IoError(source)
                )
            }
            CliError::Stdout(source) => write!(f, "standard output: {}", IoError(source)),
            CliError::NoPeakBreakdown { path } => write!(
                f,
                "{}: this dump has no peak breakdown (its peak_sites list is empty); \
                 use --by live, allocated or blocks",
                display_name(path)
            ),
            CliError::NoSuchScope { path, name, known } => {
                write!(
                    f,
                    "{}: no scope named {name:?} in this dump",
                    display_name(path)
                )?;
                if known.is_empty() {
                    write!(f, " (it has none: nothing ran inside alloc_track::scope)")
                } else {
                    let shown: Vec<String> =
                        known.iter().take(10).map(|k| format!("{k:?}")).collect();
                    write!(f, "; it has {}", shown.join(", "))?;
                    if known.len() > 10 {
                        write!(f, " and {} more", known.len() - 10)?;
                    }
                    Ok(())
                }
            }
            CliError::NothingToDraw { path, measure } => write!(
                f,
                "{}: nothing to draw: the dump has no {measure}",
                display_name(path)
            ),
            CliError::Usage(what) => write!(f, "{what}"),
            CliError::Run { program, source } => {
                write!(f, "{program}: cannot run: {}", IoError(source))
            }
            CliError::TooLarge { path, what } => write!(f, "{}: {what}", display_name(path)),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Dump(error) => Some(error),
            CliError::Output { source, .. }
            | CliError::Stdout(source)
            | CliError::Run { source, .. } => Some(source),
            _ => None,
        }
    }
}
