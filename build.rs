//! Compiles `proto/retouch/v1/*.proto` with protox (pure Rust, no system
//! `protoc`): prost messages and tonic clients, and tonic servers generated
//! from the same service descriptors. The encoded descriptor set is written
//! to OUT_DIR for server reflection.
//!
//! The servers are generated with `tonic_build::manual` so that their
//! event streams can send [`frames`](proto/frames.rs) (events encoded once for
//! all their watchers) instead of messages encoded per stream; their wire
//! format is the `.proto` files' all the same.

use std::fmt::Write as _;
use std::path::PathBuf;

use heck::ToSnakeCase;
use prost_types::FileDescriptorSet;

const PACKAGE: &str = "retouch.v1";
const CODEC: &str = "crate::codec::RetouchCodec";
const FRAME_CODEC: &str = "crate::codec::FrameCodec";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/retouch/v1/batches.proto",
        "proto/retouch/v1/jobs.proto",
        "proto/retouch/v1/matting.proto",
        "proto/retouch/v1/removal.proto",
        "proto/retouch/v1/webhooks.proto",
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

    let (names, services): (Vec<String>, Vec<_>) = servers(&descriptors).into_iter().unzip();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .codec_path(CODEC)
        .compile_fds(descriptors)?;
    tonic_build::manual::Builder::new()
        .build_client(false)
        .build_server(true)
        .compile(&services);
    let mut includes = String::new();
    for name in &names {
        let file = out_dir.join(format!("{PACKAGE}.{name}.rs"));
        writeln!(includes, "include!({:?});", file.display().to_string())?;
    }
    std::fs::write(out_dir.join(format!("{PACKAGE}.servers.rs")), includes)?;
    Ok(())
}

/// Every service of the package, by name, as a server whose streams send
/// frames.
fn servers(descriptors: &FileDescriptorSet) -> Vec<(String, tonic_build::manual::Service)> {
    let mut services = Vec::new();
    for file in descriptors.file.iter().filter(|f| f.package() == PACKAGE) {
        let comments = |path: &[i32]| {
            file.source_code_info
                .iter()
                .flat_map(|info| &info.location)
                .find(|location| location.path == path)
                .map(|location| location.leading_comments().trim().to_owned())
                .unwrap_or_default()
        };
        for (s, service) in file.service.iter().enumerate() {
            // Field numbers of FileDescriptorProto.service and
            // ServiceDescriptorProto.method, for the comments' paths.
            let service_path = [6, s as i32];
            let mut builder = tonic_build::manual::Service::builder()
                .name(service.name())
                .package(PACKAGE)
                .comment(comments(&service_path));
            for (m, method) in service.method.iter().enumerate() {
                let (output, codec) = server_output(method);
                let mut method_builder = tonic_build::manual::Method::builder()
                    .name(method.name().to_snake_case())
                    .route_name(method.name())
                    .comment(comments(&[6, s as i32, 2, m as i32]))
                    .input_type(rust_type(method.input_type()))
                    .output_type(output)
                    .codec_path(codec);
                if method.client_streaming() {
                    method_builder = method_builder.client_streaming();
                }
                if method.server_streaming() {
                    method_builder = method_builder.server_streaming();
                }
                builder = builder.method(method_builder.build());
            }
            services.push((service.name().to_owned(), builder.build()));
        }
    }
    services
}

/// What the server sends for `method`, and with which codec.
fn server_output(method: &prost_types::MethodDescriptorProto) -> (String, &'static str) {
    if !method.server_streaming() {
        return (rust_type(method.output_type()), CODEC);
    }
    // Event streams send frames; a stream of anything else (a batch's
    // progress, one message per change for one watcher) sends messages.
    let frame = match method.output_type() {
        ".retouch.v1.WatchResponse" => "crate::frames::WatchFrame",
        ".retouch.v1.JobEvent" => "crate::frames::EventFrame",
        other => return (rust_type(other), CODEC),
    };
    (frame.to_owned(), FRAME_CODEC)
}

/// The Rust path of a message of the package.
fn rust_type(proto: &str) -> String {
    let name = proto
        .strip_prefix(&format!(".{PACKAGE}."))
        .unwrap_or_else(|| panic!("{proto} is not a message of {PACKAGE}"));
    format!("crate::v1::{name}")
}
