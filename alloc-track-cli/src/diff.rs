//! placeholder
use crate::error::CliError;
use crate::weigh::Measure;
use std::io::Write;
use std::path::PathBuf;
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiffOptions {
    pub before: PathBuf,
    pub after: PathBuf,
    pub measure: Measure,
    pub top: usize,
    pub flamegraph: Option<PathBuf>,
    pub relative_to: Option<PathBuf>,
}
impl DiffOptions {
    pub fn new(before: impl Into<PathBuf>, after: impl Into<PathBuf>) -> Self {
        DiffOptions {
            before: before.into(),
            after: after.into(),
            measure: Measure::Live,
            top: 20,
            flamegraph: None,
            relative_to: None,
        }
    }
}
pub fn diff(_o: &DiffOptions, _out: &mut impl Write) -> Result<(), CliError> {
    Ok(())
}
