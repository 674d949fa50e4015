//! What the two Aliyun APIs look like on the wire, shared by the upstream
//! client (which speaks it) and the local backend (which serves it).

mod codes;
pub mod signing;
mod wire;

pub use codes::AliyunCode;
pub use wire::{
    Envelope, QueryData, QueryRequest, QueryRequestData, SubmitData, SubmitRequest,
    SubmitRequestData, WireTask, WireTaskStatus,
};

/// Which of the two upstream APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiKind {
    /// Instance matting (智能抠图), product cmapi00069645.
    InstanceMatting,
    /// Object removal (目标消除), product cmapi00069812.
    ObjectRemoval,
}

impl ApiKind {
    /// Both APIs, matting first.
    pub const ALL: [ApiKind; 2] = [ApiKind::InstanceMatting, ApiKind::ObjectRemoval];

    /// Default submit path. The original matting document prints
    /// `/api/v1/inst-mat/query` for submit too; `/submit` is what the
    /// removal document and the rest of the API imply, and the client lets
    /// operators override it.
    pub fn default_submit_path(self) -> &'static str {
        match self {
            ApiKind::InstanceMatting => "/api/v1/inst-mat/submit",
            ApiKind::ObjectRemoval => "/api/v1/obj-remove/submit",
        }
    }

    /// Default query path.
    pub fn default_query_path(self) -> &'static str {
        match self {
            ApiKind::InstanceMatting => "/api/v1/inst-mat/query",
            ApiKind::ObjectRemoval => "/api/v1/obj-remove/query",
        }
    }

    /// Short stable name used in logs, metrics and URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::InstanceMatting => "instance_matting",
            ApiKind::ObjectRemoval => "object_removal",
        }
    }
}

impl std::fmt::Display for ApiKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most tasks one submit may carry.
pub const MAX_TASKS: usize = 10;
/// Smallest allowed image side, in pixels.
pub const MIN_SIDE: u32 = 400;
/// Largest allowed image side, in pixels.
pub const MAX_SIDE: u32 = 4096;

/// What decoding an input may take: sides up to [`MAX_SIDE`] (checked from
/// the header, before any pixel is decoded) and at most 256 MiB of memory
/// (a 4096×4096 16-bit RGBA image is 128 MiB). Decompression bombs and
/// absurd headers fail with a limit error instead of exhausting memory.
pub fn decode_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(256 * 1024 * 1024);
    limits
}
pub use retouch_api::limits::KERNEL_SIZE_RANGE;

/// Request header carrying the AppCode: `Authorization: APPCODE <code>`.
pub const AUTHORIZATION_PREFIX: &str = "APPCODE ";
/// Request header carrying the per-request random nonce.
pub const NONCE_HEADER: &str = "x-ca-nonce";
/// Response header in which the API gateway names its own error.
pub const GATEWAY_ERROR_CODE_HEADER: &str = "x-ca-error-code";
/// Response header in which the API gateway describes its own error.
pub const GATEWAY_ERROR_MESSAGE_HEADER: &str = "x-ca-error-message";
/// Response header with the gateway's request id.
pub const GATEWAY_REQUEST_ID_HEADER: &str = "x-ca-request-id";
