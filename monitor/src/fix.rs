//! Guarded remediation (being written).

use crate::cli::FixArgs;
use crate::config::Config;

/// Runs `mountleak fix`; returns the exit code.
pub fn run(_cfg: &Config, _args: &FixArgs) -> anyhow::Result<u8> {
    anyhow::bail!("`mountleak fix` is not implemented yet")
}
