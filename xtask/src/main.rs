//! mountleak's chores, run as `cargo xtask <task>` (the alias is in
//! .cargo/config.toml).
//!
//! Owns: installing what the build and the tests need (`setup`), the one test
//! command that the README shows and CI runs (`test`), and running the daemon
//! from source (`run`). Building the eBPF object is not here: monitor/build.rs
//! does it through aya-build. Depends on std, anyhow and libc only (libc for
//! the benches' namespaces and loops), so it builds on a machine where
//! nothing else is installed yet. The benchmarks (`bench`) live in bench/.

mod bench;
mod cmd;
mod setup;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

const USAGE: &str = "\
usage: cargo xtask <task> [args]

tasks:
  setup           install what the build and the tests need; skips what is
                  there (needs root): Debian packages, rust-src for nightly,
                  bpf-linker 0.13 built against the nightly's LLVM, tracefs
  test            setup, then fmt, clippy, the nightly eBPF lint, build, and
                  every test including the root-only ones (needs root)
  run [-- ARGS]   setup, build release, exec target/release/mountleak ARGS
                  (default ARGS: run, i.e. the daemon; needs root)
  lint-ebpf       clippy on the eBPF crate with nightly (also part of `test`)
  bench [NAME..]  the benchmarks behind BENCHMARKS.md (needs root): model,
                  scan, probes, tax, memory, or all (default); installs
                  hyperfine, libbpf-tools and bpftrace if missing
  help            this text
";

/// Exit code for "you asked for something this cannot do": a usage error,
/// or a root-only task run as a user. 1 stays "the task ran and failed".
const EXIT_REFUSED: u8 = 2;

/// The eBPF crate only builds for bpfel-unknown-none with nightly; stable
/// cargo fails on it (duplicate `panic_impl`), so every stable workspace
/// command excludes it. It is linted separately by `lint_ebpf`.
const EBPF_CRATE: &str = "monitor-ebpf";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<ExitCode> {
    let Some((task, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return Ok(ExitCode::from(EXIT_REFUSED));
    };
    let needs_root = matches!(task.as_str(), "setup" | "test" | "run" | "bench");
    let takes_args = matches!(task.as_str(), "run" | "bench");
    if !takes_args && !rest.is_empty() {
        eprintln!("xtask {task}: unexpected arguments {rest:?}\n");
        eprint!("{USAGE}");
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    if needs_root && !setup::is_root()? {
        eprintln!(
            "xtask {task}: this needs root, and you are not root.\n\
             mountleak's tests and daemon create mounts, mount namespaces and loop \
             devices and load eBPF programs, and setup installs system packages.\n\
             Run it as root (CI does), e.g. `sudo -E env PATH=\"$PATH\" cargo xtask {task}`.\n\
             Unprivileged, `cargo test` runs the tests that need no root and lists \
             the others as ignored."
        );
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    match task.as_str() {
        "setup" => setup::run()?,
        "test" => test()?,
        "run" => run(rest)?,
        "lint-ebpf" => cmd::step("lint-ebpf", &mut lint_ebpf())?,
        "bench" => bench::run(rest)?,
        "help" | "-h" | "--help" => print!("{USAGE}"),
        other => {
            eprintln!("xtask: unknown task `{other}`\n");
            eprint!("{USAGE}");
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The whole check, cheapest step first so a formatting slip fails in
/// seconds, not after the root tests. Stops at the first failing step.
fn test() -> Result<()> {
    setup::run()?;
    cmd::step("fmt", cargo().args(["fmt", "--all", "--", "--check"]))?;
    cmd::step(
        "clippy",
        cargo()
            .args([
                "clippy",
                "--workspace",
                "--exclude",
                EBPF_CRATE,
                "--all-targets",
            ])
            .args(["--", "-D", "warnings"]),
    )?;
    cmd::step("lint-ebpf", &mut lint_ebpf())?;
    // The integration tests (tests/, package mountleak-tests) run the real
    // `mountleak` binary, but `cargo test` only builds binaries for their own
    // package's integration tests; build it explicitly so
    // tests/support::mountleak_bin() finds a fresh target/debug/mountleak.
    cmd::step(
        "build",
        cargo().args(["build", "--workspace", "--exclude", EBPF_CRATE]),
    )?;
    // Root-only tests are `#[ignore = "needs root: …"]` so that an
    // unprivileged `cargo test` passes; this command is root, so run them.
    cmd::step(
        "test",
        cargo()
            .args(["test", "--workspace", "--exclude", EBPF_CRATE])
            .args(["--", "--include-ignored"]),
    )?;
    println!("\nxtask test: all steps passed");
    Ok(())
}

/// Clippy on the eBPF crate, which only compiles for the BPF target with
/// nightly and a rebuilt `core` (hence rust-src). No `--all-targets`: a
/// no_std crate has no test harness on that target.
fn lint_ebpf() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(repo_root())
        .args([
            "run",
            setup::NIGHTLY,
            "cargo",
            "clippy",
            "--package",
            EBPF_CRATE,
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"]);
    cmd
}

/// Builds the release binary and replaces this process with it, so signals
/// (Ctrl-C, SIGTERM) reach the daemon directly.
fn run(args: &[String]) -> Result<()> {
    setup::run()?;
    cmd::run(cargo().args(["build", "--release", "--bin", "mountleak"]))?;
    // `cargo xtask run -- scan` arrives as ["--", "scan"] or ["scan"]
    // depending on how cargo forwarded it; accept both.
    let args = match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    };
    let default = ["run".to_owned()];
    let args = if args.is_empty() { &default[..] } else { args };
    let binary = target_dir().join("release/mountleak");
    let mut daemon = Command::new(&binary);
    daemon.args(args);
    println!("+ {}", cmd::show(&daemon));
    let err = daemon.exec();
    Err(err).with_context(|| format!("could not exec {}", binary.display()))
}

/// The cargo that runs xtask (cargo sets `CARGO` for `cargo run`), in the
/// repository root, so nested builds use the same toolchain and workspace.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo_root());
    cmd
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one directory below the repository root")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}
