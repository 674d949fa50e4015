//! The gRPC API of retouch, package `retouch.v1`: messages, clients and
//! servers generated from `proto/retouch/v1/*.proto`. Shared by `retouchd`,
//! the `retouch` dashboard and any Rust client.

pub mod codec;
pub mod frames;
#[cfg(feature = "json")]
pub mod json;
pub mod limits;

/// Package `retouch.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("retouch.v1");
    // The servers, generated beside the messages and clients (see build.rs).
    include!(concat!(env!("OUT_DIR"), "/retouch.v1.servers.rs"));

    /// Encoded `FileDescriptorSet` of the package (and the well-known types it
    /// imports), for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/retouch_descriptor.bin"));
}
