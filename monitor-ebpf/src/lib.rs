//! Nothing here: the programs are the `monitor` binary (`src/main.rs`). This
//! empty library lets `monitor` name this crate as a build-dependency, so
//! cargo reruns its build script when the programs' sources change.
#![no_std]
