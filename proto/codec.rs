//! The codec of every `retouch.v1` method: prost's, except for how a message
//! that cannot be decoded is reported.
//!
//! tonic's prost codec calls any undecodable message INTERNAL, as if the
//! receiver were at fault. A request whose string field is not UTF-8, or
//! whose field is cut short, is the sender's mistake: it is INVALID_ARGUMENT
//! here, with prost's description of what is wrong. The same codec decodes
//! responses in clients, where a malformed answer from a server is reported
//! the same way.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
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
