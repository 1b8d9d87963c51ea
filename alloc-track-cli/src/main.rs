//! `alloc-track`: reports, flamegraphs, diffs and exports of heap dumps.
//! Exit codes: 0 success, 1 bad input or I/O, 2 bad usage (from clap).

use std::io::{self, BufWriter};
use std::process::ExitCode;

use alloc_track_cli::cli::Cli;
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cwd = std::env::current_dir().ok();
    let mut out = BufWriter::new(io::stdout().lock());
    let mut err = io::stderr().lock();
    match alloc_track_cli::run(cli, cwd, &mut out, &mut err) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("alloc-track: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
