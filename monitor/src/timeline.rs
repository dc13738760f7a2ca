//! Postmortem timelines from the event store (being written).

use crate::cli::TimelineArgs;
use crate::config::Config;

/// Runs `mountleak timeline`; returns the exit code.
pub fn run(_cfg: &Config, _args: &TimelineArgs) -> anyhow::Result<u8> {
    anyhow::bail!("`mountleak timeline` is not implemented yet")
}
