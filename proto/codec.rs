//! The codec of every `retouch.v1` method: prost's, except for how a message
//! that cannot be decoded is reported.
//!
//! tonic's prost codec calls any undecodable message INTERNAL, as if the
//! receiver were at fault. A request whose string field is not UTF-8, or
//! whose field is cut short, is the sender's mistake: it is INVALID_ARGUMENT
//! here, with prost's description of what is wrong. The same codec decodes
//! responses in clients, where a malformed answer from a server is reported
//! the same way.
//!
//! [`FrameCodec`] is the server's codec of the event streams: it writes
//! events encoded once for all their streams.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::frames::Frame;
use tonic_prost::{ProstDecoder, ProstEncoder};

/// prost encoding; undecodable messages are INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct RetouchCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for RetouchCodec<T, U> {
    fn default() -> Self {
        RetouchCodec {
            _messages: PhantomData,
        }
    }
}

impl<T, U> Codec for RetouchCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RetouchDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RetouchDecoder {
            prost: ProstDecoder::new(BufferSettings::default()),
        }
    }
}

/// Decodes `U` with prost, reporting failures as INVALID_ARGUMENT.
#[derive(Debug)]
pub struct RetouchDecoder<U> {
    prost: ProstDecoder<U>,
}

impl<U: prost::Message + Default> Decoder for RetouchDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.prost.decode(buf).map_err(|status| {
            Status::invalid_argument(format!("malformed protobuf message: {}", status.message()))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.prost.buffer_settings()
    }
}

/// The codec of the event streams' server side: requests are decoded as by
/// [`RetouchCodec`]; responses are [`Frame`]s, written as they are.
#[derive(Debug, Clone)]
pub struct FrameCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for FrameCodec<T, U> {
    fn default() -> Self {
        FrameCodec {
            _messages: PhantomData,
        }
    }
}

impl<T, U> Codec for FrameCodec<T, U>
where
    T: Frame,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = FrameEncoder<T>;
    type Decoder = RetouchDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        FrameEncoder {
            _frames: PhantomData,
        }
    }

    fn decoder(&mut self) -> Self::Decoder {
        RetouchDecoder {
            prost: ProstDecoder::new(BufferSettings::default()),
        }
    }
}

/// Writes [`Frame`]s.
#[derive(Debug)]
pub struct FrameEncoder<T> {
    _frames: PhantomData<T>,
}

/// Bytes each stream's encoding buffer starts with. tonic keeps one buffer
/// per response stream for the stream's life, 8 KiB by default: 80 MB for
/// 10,000 mostly idle watchers. Events are a few hundred bytes, and a burst
/// grows the buffer as it needs.
const FRAME_BUFFER_BYTES: usize = 512;
/// Bytes of ready frames batched into one write: tonic's default.
const FRAME_YIELD_BYTES: usize = 2 * 1024;

impl<T: Frame> Encoder for FrameEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode_frame(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(FRAME_BUFFER_BYTES, FRAME_YIELD_BYTES)
    }
}
