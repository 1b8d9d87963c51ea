//! The `alloc-track` command line as a library: every command is a
//! function taking an options struct and a `Write` for its text, so each is
//! testable without a process. `main` only parses flags and owns exit
//! codes.
//!
//! All commands read dumps through [`input::load`] (a file, or standard
//! input for `-`), which validates them first: nothing here indexes past a table or allocates by
//! a number read from the file.

pub mod by_type;
pub mod cli;
pub mod diff;
pub mod error;
pub mod export;
pub mod flamegraph;
pub mod focus;
pub mod input;
pub mod memory;
pub mod output;
pub mod report;
pub mod rows;
pub mod run;
pub mod scopes;
pub mod shorten;
pub mod stacks;
pub mod temporary;
pub mod trend;
pub mod weigh;
pub mod your_code;

use std::io::Write;
use std::path::PathBuf;

pub use error::CliError;

use clap::CommandFactory;
use cli::{Cli, Command};

/// Runs one parsed command line, writing its output to `out` and warnings
/// (and text displaced by `-o -`) to `err`. `cwd` is the directory source
/// files are shown relative to.
///
/// Returns the exit code: 0, or for `run` the program's own. A closed
/// standard output (`alloc-track report dump.json | head`) is success: the
/// reader has seen all it wanted.
pub fn run(
    cli: Cli,
    cwd: Option<PathBuf>,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<u8, CliError> {
    let mut code = 0;
    let result = match cli.command {
        Command::Run(args) => run::run(&args.into_options(cwd), out, err).map(|c| code = c),
        Command::Report(args) => report::report(&args.into_options(cwd), out, err),
        Command::Flamegraph(args) => flamegraph::flamegraph(&args.into_options(), out),
        Command::Diff(args) => diff::diff(&args.into_options(cwd), out, err),
        Command::Export(args) => export::export(&args.into_options(), out),
        Command::Trend(args) => trend::trend(&args.into_options(cwd), out, err),
        Command::Completions { shell } => {
            // clap_complete panics on a write error, so the script is made
            // in memory and written here, where a closed pipe is no error.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "alloc-track", &mut script);
            out.write_all(&script).map_err(CliError::Stdout)
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(out)
            .map_err(CliError::Stdout),
    };
    let result = result.and_then(|()| out.flush().map_err(CliError::Stdout));
    match result {
        Err(error) if error.is_broken_pipe() => Ok(code),
        other => other.map(|()| code),
    }
}
