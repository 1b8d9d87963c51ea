//! Why a dump could not be read or written.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a dump could not be read, validated or written.
///
/// The `Display` text is one line meant for a person: it names the file
/// (when there is one) and what is wrong with it.
#[derive(Debug)]
#[non_exhaustive]
pub enum DumpError {
    /// The file could not be opened, read or written.
    Io {
        /// The file concerned, when the dump came from or went to a file.
        path: Option<PathBuf>,
        /// What the operating system said.
        source: io::Error,
    },
    /// The bytes are not valid JSON, or the JSON does not have the shape of
    /// a dump (a missing field, a string where a number belongs, a negative
    /// count, a truncated file).
    Parse {
        /// The file concerned, if any.
        path: Option<PathBuf>,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// Valid JSON that is not an alloc-track dump.
    NotADump {
        /// The file concerned, if any.
        path: Option<PathBuf>,
    },
    /// A dump written by a newer alloc-track than this reader.
    UnsupportedVersion {
        /// The file concerned, if any.
        path: Option<PathBuf>,
        /// The version the dump declares.
        found: u32,
        /// The newest version this reader understands.
        supported: u32,
    },
    /// The path to write a dump to exists and is not a regular file: a
    /// directory, a named pipe, a socket or a device (after following
    /// symbolic links). A dump never replaces one.
    NotARegularFile {
        /// The path as given.
        path: PathBuf,
        /// What it is, for a person: "a directory", "a named pipe (FIFO)",
        /// "a socket", "a character device", "a block device".
        found: &'static str,
    },
    /// A well-formed dump whose contents contradict themselves: an index
    /// out of range, totals that do not add up, more live than allocated.
    Invalid {
        /// The file concerned, if any.
        path: Option<PathBuf>,
        /// Which part is wrong and how.
        reason: String,
    },
}

impl DumpError {
    /// Attaches the file name to an error that lacks one.
    pub fn with_path(mut self, file: impl Into<PathBuf>) -> Self {
        let slot = match &mut self {
            DumpError::Io { path, .. }
            | DumpError::Parse { path, .. }
            | DumpError::NotADump { path }
            | DumpError::UnsupportedVersion { path, .. }
            | DumpError::Invalid { path, .. } => path,
            DumpError::NotARegularFile { .. } => return self, // always has one
        };
        if slot.is_none() {
            *slot = Some(file.into());
        }
        self
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        DumpError::Invalid {
            path: None,
            reason: reason.into(),
        }
    }
}

impl From<serde_json::Error> for DumpError {
    fn from(error: serde_json::Error) -> Self {
        if error.is_io() {
            return DumpError::Io {
                path: None,
                source: error.into(),
            };
        }
        let message = error.to_string();
        // serde_json appends " at line L column C"; the position is kept in
        // its own fields, so strip it from the message.
        let message = match message.rfind(" at line ") {
            Some(cut) => message[..cut].to_string(),
            None => message,
        };
        DumpError::Parse {
            path: None,
            line: error.line(),
            column: error.column(),
            message,
        }
    }
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = |path: &Option<PathBuf>| match path {
            Some(path) => format!("{}: ", path.display()),
            None => String::new(),
        };
        match self {
            DumpError::Io { path: p, source } => {
                write!(f, "{}{}", path(p), crate::human::IoError(source))
            }
            DumpError::Parse {
                path: p,
                line,
                column,
                message,
            } => {
                if message.starts_with("EOF while parsing") {
                    write!(
                        f,
                        "{}truncated dump: the JSON ends early (line {line}, column {column})",
                        path(p)
                    )
                } else {
                    write!(
                        f,
                        "{}not a valid dump at line {line}, column {column}: {message}",
                        path(p)
                    )
                }
            }
            DumpError::NotADump { path: p } => write!(
                f,
                "{}valid JSON but not an alloc-track dump (no \"format\": \"{}\")",
                path(p),
                super::FORMAT_NAME
            ),
            DumpError::UnsupportedVersion {
                path: p,
                found,
                supported,
            } => write!(
                f,
                "{}dump format version {found} is newer than this alloc-track understands \
                 (up to {supported}); upgrade alloc-track",
                path(p)
            ),
            DumpError::NotARegularFile { path, found } => write!(
                f,
                "{}: is {found}, not a regular file; a dump never replaces one",
                path.display()
            ),
            DumpError::Invalid { path: p, reason } => {
                write!(f, "{}inconsistent dump: {reason}", path(p))
            }
        }
    }
}

impl std::error::Error for DumpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DumpError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
