//! Compiles the internal Raft transport (`proto/petkv/raft/v1/raft.proto`) with a vendored
//! `protoc`, so a fresh machine needs no system protoc. The public API (`petkv/v1/kv.proto`) is
//! compiled by the petkv-client crate; raft.proto does not import it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("petkv_raft_descriptor.bin"))
        .bytes(".")
        .compile_protos(&["../proto/petkv/raft/v1/raft.proto"], &["../proto"])?;
    println!("cargo:rerun-if-changed=../proto/petkv/raft");
    Ok(())
}
