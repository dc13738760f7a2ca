//! `cargo xtask setup`: everything a fresh machine of our kind lacks before
//! mountleak builds and its root tests run. Each step checks first and says
//! what it found, so running it again is cheap and changes nothing.
//!
//! The recipe is the one measured in /work/shared/PLATFORM.md ("Rust
//! toolchain for aya"): Debian's LLVM is too old for bpf-linker and no
//! prebuilt one is reachable, so bpf-linker is built against the nightly
//! toolchain's own libLLVM.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use crate::cmd;

/// Debian packages the build and the tests call. Most are in the base image
/// already; `apt-get update` only runs when one is missing.
const APT_PACKAGES: &[&str] = &[
    // unshare, nsenter, losetup: the test lab's namespaces and loop devices.
    "util-linux",
    // mount, umount: every mount the tests make or remove.
    "mount",
    // mkfs.ext4: the loop-device volumes that stand in for CSI volumes.
    "e2fsprogs",
    // protoc: the containerd-client and k8s-cri crates compile containerd's
    // and the CRI's .proto files in their build scripts (prost no longer
    // bundles protoc).
    "protobuf-compiler",
    // containerd, ctr and containerd-shim-runc-v2 (1.6 on Debian 12): the
    // containerd and CRI tests start their own instance; runc is its
    // runtime (crun does not work on this VM's hybrid cgroups).
    "containerd",
    "runc",
    // dockerd and the docker CLI (20.10 on Debian 12, Engine API 1.41; it
    // brings containerd and runc too). The Docker tests start their own
    // dockerd by hand (tests/support/docker.rs); apt starts no service here.
    "docker.io",
    // A static busybox: the rootfs of the images the containerd and Docker
    // tests build and import (no registry is reachable), and the CRI
    // sandbox's "pause".
    "busybox-static",
    // systemd-analyze: tests/deploy verifies deploy/systemd/mountleak.service
    // with it (installing the package starts nothing; PID 1 stays as it is).
    "systemd",
    // pip: installs the rotel OTLP collector below.
    "python3-pip",
    // Headless Chromium: tests/timeline renders `timeline --html` and checks its DOM and a screenshot.
    "chromium",
];

/// Python packages the tests run, pinned: (package, version, why).
const PIP_PACKAGES: &[(&str, &str, &str)] = &[(
    "rotel",
    "0.0.1a15",
    "the OTLP collector tests/export sends traces to (the wheel ships rotel-agent)",
)];

/// The toolchain the eBPF crate builds with (aya-build and `lint-ebpf` call
/// it by this name). PLATFORM.md: the image's `nightly` is 1.97.0-nightly,
/// which the aya 0.14 family accepts.
pub const NIGHTLY: &str = "nightly";

/// Rustup components: (toolchain, component, why). `None` is the toolchain
/// `cargo` resolves to in this repository (no rust-toolchain file: stable).
const RUST_COMPONENTS: &[(Option<&str>, &str, &str)] = &[
    (
        Some(NIGHTLY),
        "rust-src",
        "-Z build-std=core for bpfel-unknown-none",
    ),
    (Some(NIGHTLY), "clippy", "lint-ebpf"),
    (None, "rustfmt", "cargo fmt --check"),
    (None, "clippy", "cargo clippy"),
];

/// bpf-linker links the eBPF object. 0.13.0 is the release with an `llvm-22`
/// feature matching the image's nightly (LLVM 22.1).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where the copy of the nightly's libLLVM lives. bpf-linker records this
/// directory as its runpath, so it must outlive the build (not /tmp) and must
/// not move. `MOUNTLEAK_LLVM_DIR` overrides it (used to rehearse a fresh
/// install without disturbing the real one).
const LLVM_DIR: &str = "/opt/mountleak/llvm";

/// aya resolves tracepoint ids through tracefs; a fresh VM boots without it.
const TRACEFS: &str = "/sys/kernel/tracing";

pub fn run() -> Result<()> {
    let started = Instant::now();
    apt_packages().context("setup: Debian packages")?;
    rust_components().context("setup: rustup components")?;
    bpf_linker().context("setup: bpf-linker")?;
    pip_packages().context("setup: Python packages")?;
    tracefs().context("setup: tracefs")?;
    println!("setup: done ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|package| !dpkg_installed(package))
        .collect();
    if missing.is_empty() {
        println!(
            "setup: Debian packages {}: installed",
            APT_PACKAGES.join(", ")
        );
        return Ok(());
    }
    println!("setup: Debian packages missing: {}", missing.join(", "));
    // A fresh image has never run `apt-get update`: its package lists are
    // empty, so an install without it finds nothing.
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn pip_packages() -> Result<()> {
    for &(package, version, why) in PIP_PACKAGES {
        let shown = cmd::probe(Command::new("python3").args(["-m", "pip", "show", package]));
        let installed = shown.as_deref().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Version:"))
                .map(str::trim)
        });
        if installed == Some(version) {
            println!("setup: pip {package} {version} ({why}): installed");
            continue;
        }
        println!("setup: pip {package} {version} ({why}): installing");
        let spec = format!("{package}=={version}");
        let mut install = Command::new("python3");
        install.args(["-m", "pip", "install", "--quiet", &spec]);
        if cmd::run(&mut install).is_err() {
            // Debian's own python refuses (PEP 668) unless told this is meant.
            cmd::run(Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--break-system-packages",
                &spec,
            ]))?;
        }
    }
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    cmd::probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status == "install ok installed")
}

fn rust_components() -> Result<()> {
    for &(toolchain, component, why) in RUST_COMPONENTS {
        let mut list = Command::new("rustup");
        list.args(["component", "list", "--installed"]);
        let mut add = Command::new("rustup");
        add.args(["component", "add", component]);
        if let Some(toolchain) = toolchain {
            list.args(["--toolchain", toolchain]);
            add.args(["--toolchain", toolchain]);
        }
        let label = format!(
            "{component} on {} ({why})",
            toolchain.unwrap_or("the default toolchain")
        );
        // Installed components are listed as `rust-src` or with their host
        // triple appended (`clippy-x86_64-unknown-linux-gnu`).
        let installed = cmd::output(&mut list)?.lines().any(|line| {
            line == component
                || line
                    .strip_prefix(component)
                    .is_some_and(|rest| rest.starts_with('-'))
        });
        if installed {
            println!("setup: rustup component {label}: installed");
        } else {
            println!("setup: rustup component {label}: missing");
            cmd::run(&mut add)?;
        }
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let wanted = format!("bpf-linker {}", minor_prefix(BPF_LINKER_VERSION));
    match installed_bpf_linker() {
        Some(version) if version.starts_with(&wanted) => {
            println!("setup: {version}: installed");
            return Ok(());
        }
        Some(version) => println!("setup: found {version}, want {BPF_LINKER_VERSION}: installing"),
        None => println!("setup: bpf-linker missing (or does not start): installing"),
    }

    let started = Instant::now();
    let llvm_dir = std::env::var_os("MOUNTLEAK_LLVM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(LLVM_DIR));
    let major = copy_nightly_llvm(&llvm_dir)?;
    cmd::run(
        Command::new("rustup")
            .args(["run", NIGHTLY, "cargo", "install"])
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            // --force: we only get here when the installed binary is the
            // wrong version or does not run (e.g. its libLLVM went away),
            // and cargo would otherwise call it "already installed".
            .args(["--locked", "--force", "--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &llvm_dir),
    )?;

    match installed_bpf_linker() {
        Some(version) if version.starts_with(&wanted) => {
            println!(
                "setup: {version}: installed in {:.0} s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Some(version) => bail!("after installing, `bpf-linker --version` reports {version}"),
        None => bail!(
            "bpf-linker was installed but `bpf-linker --version` does not run; is \
             cargo's bin directory ($CARGO_HOME/bin, usually ~/.cargo/bin) on PATH?"
        ),
    }
}

/// The first line of `bpf-linker --version`, if it is on PATH and runs.
/// aya-build finds it through PATH and it must start without
/// LD_LIBRARY_PATH, so this is exactly the check that matters.
fn installed_bpf_linker() -> Option<String> {
    let out = cmd::probe(Command::new("bpf-linker").arg("--version"))?;
    Some(out.lines().next().unwrap_or_default().trim().to_owned())
}

/// "0.13.0" -> "0.13.": any patch release of the wanted minor will do.
fn minor_prefix(version: &str) -> String {
    let minor: Vec<&str> = version.splitn(3, '.').take(2).collect();
    format!("{}.", minor.join("."))
}

/// Copies the nightly toolchain's libLLVM into `<dir>/lib/` beside a
/// `libLLVM.so` symlink (bpf-linker's build wants both names) and returns
/// its LLVM major version, which picks bpf-linker's `llvm-N` feature.
fn copy_nightly_llvm(dir: &Path) -> Result<u32> {
    let sysroot =
        cmd::output(Command::new("rustup").args(["run", NIGHTLY, "rustc", "--print", "sysroot"]))?;
    let source_dir = Path::new(sysroot.trim()).join("lib");
    let source = find_libllvm(&source_dir)?;
    let name = source
        .file_name()
        .context("libLLVM path has no file name")?;
    let major = llvm_major(name)
        .with_context(|| format!("no LLVM major version in {}", source.display()))?;

    let lib = dir.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let target = lib.join(name);
    let source_len = fs::metadata(&source)?.len();
    if fs::metadata(&target).is_ok_and(|meta| meta.len() == source_len) {
        println!("setup: {} present", target.display());
    } else {
        println!("setup: copying {} to {}", source.display(), lib.display());
        // Copy under a temporary name and rename, so an interrupted copy is
        // never mistaken for a complete one by the size check above.
        let partial = lib.join(".libLLVM.partial");
        fs::copy(&source, &partial)
            .with_context(|| format!("copying {} to {}", source.display(), partial.display()))?;
        fs::rename(&partial, &target)?;
    }

    let link = lib.join("libLLVM.so");
    if fs::read_link(&link).is_ok_and(|points_to| points_to == Path::new(name)) {
        println!("setup: {} present", link.display());
    } else {
        println!(
            "setup: linking {} -> {}",
            link.display(),
            name.to_string_lossy()
        );
        match fs::remove_file(&link) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("removing {}", link.display())),
        }
        symlink(name, &link).with_context(|| format!("creating {}", link.display()))?;
    }
    Ok(major)
}

/// The shared library itself (`libLLVM.so.22.1-rust-1.97.0-nightly`), not the
/// small linker script beside it (`libLLVM-22-rust-1.97.0-nightly.so`).
fn find_libllvm(dir: &Path) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("libLLVM.so.")
            && entry.file_type()?.is_file()
        {
            found.push(entry.path());
        }
    }
    ensure!(
        found.len() == 1,
        "expected one libLLVM.so.* file in {}, found {:?}",
        dir.display(),
        found
    );
    Ok(found.remove(0))
}

/// `libLLVM.so.22.1-rust-…` -> 22.
fn llvm_major(name: &std::ffi::OsStr) -> Option<u32> {
    let rest = name.to_str()?.strip_prefix("libLLVM.so.")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn tracefs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    let mounted = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(TRACEFS) && fields.next() == Some("tracefs")
    });
    if mounted {
        println!("setup: tracefs at {TRACEFS}: mounted");
        return Ok(());
    }
    println!("setup: tracefs not mounted at {TRACEFS}: mounting it");
    cmd::run(Command::new("mount").args(["-t", "tracefs", "tracefs", TRACEFS]))
}

/// Whether this process runs with euid 0. Read from /proc because xtask
/// depends on std and anyhow only (no libc).
pub fn is_root() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status")?;
    let uids = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .context("no Uid: line in /proc/self/status")?;
    // Real, effective, saved, filesystem: the effective one decides.
    let effective = uids.split_whitespace().nth(1).context("short Uid: line")?;
    Ok(effective == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_reads_the_shared_library_name() {
        assert_eq!(
            llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly".as_ref()),
            Some(22)
        );
        assert_eq!(
            llvm_major("libLLVM-22-rust-1.97.0-nightly.so".as_ref()),
            None
        );
    }

    #[test]
    fn minor_prefix_accepts_patch_releases() {
        assert_eq!(minor_prefix("0.13.0"), "0.13.");
    }
}
