//! Compiles `proto/retouch/v1/*.proto` with protox (pure Rust, no system
//! `protoc`) and generates prost messages plus tonic clients and servers.
//! The encoded descriptor set is written to OUT_DIR for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/retouch/v1/jobs.proto",
        "proto/retouch/v1/matting.proto",
        "proto/retouch/v1/removal.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }

    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("retouch_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::RetouchCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
