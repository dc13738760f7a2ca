//! Node audit (being written).

use crate::cli::DoctorArgs;
use crate::config::Config;

/// Runs `mountleak doctor`; returns the exit code.
pub fn run(_cfg: &Config, _args: &DoctorArgs) -> anyhow::Result<u8> {
    anyhow::bail!("`mountleak doctor` is not implemented yet")
}
