//! Compiles the public API (`proto/petkv/v1/kv.proto`: client and server code, and its
//! descriptors for gRPC reflection) with a vendored `protoc`, so a fresh machine needs no
//! system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("petkv_v1_descriptor.bin"))
        .bytes(".")
        .compile_protos(&["../proto/petkv/v1/kv.proto"], &["../proto"])?;
    println!("cargo:rerun-if-changed=../proto/petkv/v1");
    Ok(())
}
