//! The `alloc-track` command line as a library: every command is a
//! function taking an options struct and a `Write` for its text, so each is
//! testable without a process. `main` only parses flags and owns exit
//! codes.
//!
//! All commands read dumps through [`alloc_track::dump::Dump::load`], which
//! validates them first: nothing here indexes past a table or allocates by
//! a number read from the file.

pub mod by_type;
pub mod cli;
pub mod diff;
pub mod error;
pub mod export;
pub mod flamegraph;
pub mod matching;
pub mod output;
pub mod report;
pub mod scopes;
pub mod stacks;
pub mod temporary;
pub mod trend;
pub mod weigh;

use std::io::Write;
use std::path::PathBuf;

pub use error::CliError;

use cli::{Cli, Command};

/// Runs one parsed command line, writing its text to `out`. `cwd` is the
/// directory source files are shown relative to.
///
/// A closed standard output (`alloc-track report dump.json | head`) is
/// success: the reader has seen all it wanted.
pub fn run(cli: Cli, cwd: Option<PathBuf>, out: &mut impl Write) -> Result<(), CliError> {
    let result = match cli.command {
        Command::Report(args) => report::report(&args.into_options(cwd), out),
        Command::Flamegraph(args) => flamegraph::flamegraph(&args.into_options(), out),
        Command::Diff(args) => diff::diff(&args.into_options(cwd), out),
        Command::Export(args) => export::export(&args.into_options(), out),
        Command::Trend(args) => trend::trend(&args.into_options(cwd), out),
    };
    let result = result.and_then(|()| out.flush().map_err(CliError::Stdout));
    match result {
        Err(error) if error.is_broken_pipe() => Ok(()),
        other => other,
    }
}
