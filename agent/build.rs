//! Compiles the SPIFFE Workload API (`proto/workload.proto`) with protox, a protobuf compiler in
//! Rust (no system `protoc` needed), and generates the tonic server and client from its
//! descriptors.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/workload.proto");
    let descriptors = protox::compile(["workload.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
