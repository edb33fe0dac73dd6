//! Compiles the internal Raft transport (`proto/petkv/raft/v1/raft.proto`) and etcd's v3 API
//! (`proto/etcd/`, served on `--etcd-listen`) with a vendored `protoc`, so a fresh machine
//! needs no system protoc. The public API (`petkv/v1/kv.proto`) is compiled by the
//! petkv-client crate; neither file here imports it.

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

    // etcd's files import google/protobuf/descriptor.proto, which comes with protoc.
    let includes = [std::path::PathBuf::from("../proto/etcd"), protoc_bin_vendored::include_path()?];
    let protos = ["../proto/etcd/etcd/api/etcdserverpb/rpc.proto", "../proto/etcd/etcd/api/mvccpb/kv.proto"]
        .map(std::path::PathBuf::from);
    tonic_prost_build::configure()
        .build_client(false)
        .file_descriptor_set_path(out_dir.join("etcd_descriptor.bin"))
        .bytes(".")
        .compile_protos(&protos, &includes)?;
    println!("cargo:rerun-if-changed=../proto/etcd");
    Ok(())
}
