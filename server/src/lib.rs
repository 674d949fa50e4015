//! retouchd: a gRPC server over Aliyun's instance matting and object removal
//! APIs, and the embedded Aliyun-compatible local backend that lets it run
//! without an Aliyun account.

pub mod aliyun;
