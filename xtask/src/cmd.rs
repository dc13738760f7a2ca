//! Running external commands the way every task wants: echo the command line
//! first (so a CI log shows what ran), then fail with that command line in the
//! error. Owns nothing else; std + anyhow only.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The command line as a user could paste it, environment overrides first.
pub fn show(cmd: &Command) -> String {
    let env = cmd.get_envs().filter_map(|(key, value)| {
        value.map(|value| format!("{}={}", key.to_string_lossy(), value.to_string_lossy()))
    });
    let argv = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|arg| arg.to_string_lossy().into_owned());
    env.chain(argv).collect::<Vec<_>>().join(" ")
}

/// Runs `cmd` with inherited stdio, after printing it; an unsuccessful exit
/// is an error naming the command.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = show(cmd);
    println!("+ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs one named step of a task, reporting its duration, so that the first
/// failure stops the task with the step's name in the message.
pub fn step(name: &str, cmd: &mut Command) -> Result<()> {
    println!("\n==> {name}");
    let started = Instant::now();
    run(cmd).with_context(|| format!("step `{name}` failed"))?;
    println!("==> {name}: ok ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// Stdout of `cmd` if it starts and exits successfully, `None` otherwise.
/// For probing what is installed, where "missing" and "broken" both mean
/// "install it"; nothing is printed.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Stdout of `cmd`, which must succeed; stderr goes to the terminal.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = show(cmd);
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !output.status.success() {
        bail!("`{line}` failed ({})", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
