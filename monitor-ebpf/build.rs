//! Rebuild the programs when bpf-linker changes: cargo cannot see that a new
//! linker (say, one built against another LLVM) would give another object.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:rerun-if-env-changed=PATH"),
    }
}
