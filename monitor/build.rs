//! Builds the eBPF programs (`monitor-ebpf`, for bpfel-unknown-none) with
//! aya-build, which runs a nested `cargo +nightly build -Z build-std=core`.
//! The object lands in `$OUT_DIR/monitor`; `src/ebpf/loader.rs` embeds it.
//!
//! A machine without the eBPF toolchain still builds the binary: missing
//! bpf-linker, nightly or its rust-src give a cargo warning and an empty
//! object, and loading then says what to do. A failing eBPF build with the
//! toolchain present is a bug in our programs and fails the build.
//!
//! `AYA_BUILD_SKIP=1` (read by aya-build too) skips the eBPF build: for
//! `cargo clippy`/`cargo check` loops that do not need the programs.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Context as _};

/// The toolchain the eBPF crate builds with (see shared/PLATFORM.md: the
/// image's `nightly` is the one bpf-linker was built against).
const TOOLCHAIN: &str = "nightly";
const EBPF_PACKAGE: &str = "monitor-ebpf";
/// The eBPF crate's binary name, which is also the object's file name.
const OBJECT: &str = "monitor";

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let ebpf_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("monitor/ has no parent"))?
        .join(EBPF_PACKAGE);
    let object = out_dir.join(OBJECT);
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    println!("cargo:rerun-if-changed=../monitor-common/src");

    if matches!(
        env::var("AYA_BUILD_SKIP").as_deref(),
        Ok("1" | "true" | "TRUE")
    ) {
        println!("cargo:warning=AYA_BUILD_SKIP is set: building without the eBPF programs");
        return write_empty(&object);
    }
    if let Err(missing) = check_toolchain() {
        println!("cargo:warning=building without the eBPF programs: {missing}; run `cargo xtask setup` and rebuild");
        return write_empty(&object);
    }

    let ebpf_dir_str = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {ebpf_dir:?}"))?;
    let package = aya_build::Package {
        name: EBPF_PACKAGE,
        root_dir: ebpf_dir_str,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(TOOLCHAIN))
        .context("building the eBPF programs (monitor-ebpf) failed")?;
    if !object.exists() {
        return Err(anyhow!("aya-build did not produce {}", object.display()));
    }
    Ok(())
}

/// The empty object the loader recognises as "built without programs".
fn write_empty(object: &Path) -> anyhow::Result<()> {
    fs::write(object, []).with_context(|| format!("writing {}", object.display()))
}

/// Checks what the nested build needs, naming the first thing missing.
fn check_toolchain() -> Result<(), String> {
    let linker = find_in_path("bpf-linker");
    // Watch where `cargo install` puts it, so installing it later reruns us
    // (a path that does not exist yet makes cargo rerun every build).
    let cargo_bin = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin").join("bpf-linker"));
    for watched in linker.iter().chain(cargo_bin.iter()) {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    let linker = linker.ok_or("bpf-linker is not on PATH")?;
    // A bpf-linker built against a libLLVM that has since moved fails here
    // rather than in the middle of the nested build.
    let runs = Command::new(&linker)
        .arg("--version")
        .output()
        .map(|o| o.status.success());
    if !matches!(runs, Ok(true)) {
        return Err(format!(
            "{} --version fails (its libLLVM is missing?)",
            linker.display()
        ));
    }
    let sysroot = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .ok_or(format!(
            "the `{TOOLCHAIN}` toolchain is not installed (rustup run {TOOLCHAIN} rustc fails)"
        ))?;
    // -Z build-std=core compiles core from source.
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Err(format!(
            "rust-src is missing from the `{TOOLCHAIN}` toolchain"
        ));
    }
    Ok(())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
