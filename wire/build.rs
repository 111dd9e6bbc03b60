//! Generates the prost types of the wire format from `proto/*.proto`.
//!
//! The `.proto` files are parsed by `protox` (pure Rust), so no `protoc` binary is
//! needed on the build machine.

use std::path::PathBuf;

const PROTO_DIR: &str = "proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(PROTO_DIR)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "proto"));
    // Deterministic order, so the generated code does not depend on the directory.
    files.sort();

    println!("cargo:rerun-if-changed={PROTO_DIR}");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let fds = protox::compile(&files, [PROTO_DIR])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
