//! Compiles `proto/csoc/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/csoc/v1/ingest.proto", "proto/prometheus/remote.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The RPC is named `Connect` (DESIGN.md); the generated client's
        // `connect(dst)` constructor would clash with it, so clients are built
        // with `IngestClient::new(channel)` instead.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
