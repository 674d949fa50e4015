//! What servers send on the event streams (`Jobs.Watch` and the `Run`
//! methods), built so that an event sent to many streams is encoded once.
//!
//! The wire format is exactly the messages' of the `.proto` files: a
//! [`WatchFrame`] is a `WatchResponse` and an [`EventFrame`] a `JobEvent`.
//! Only the server's side of these methods uses them (clients decode the
//! generated messages); a frame therefore only knows how to encode itself.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

use crate::v1;

/// A message of a server stream, as it is written into the response.
pub trait Frame: Send + 'static {
    /// Appends the message's protobuf encoding to `buf`.
    fn encode_frame(&self, buf: &mut impl BufMut);
}

/// A job event with its protobuf encoding, made once and shared by every
/// stream it is sent on. One pointer: cloning is one reference count, and
/// the queues of 10,000 streams hold 8 bytes per event each.
#[derive(Debug, Clone)]
pub struct SharedEvent(Arc<Encoded>);

#[derive(Debug)]
struct Encoded {
    event: Arc<v1::JobEvent>,
    bytes: Bytes,
}

impl SharedEvent {
    /// Encodes `event`.
    pub fn new(event: Arc<v1::JobEvent>) -> Self {
        let bytes = Bytes::from(event.encode_to_vec());
        SharedEvent(Arc::new(Encoded { event, bytes }))
    }

    /// The event.
    pub fn event(&self) -> &v1::JobEvent {
        &self.0.event
    }

    /// Its protobuf encoding.
    pub fn encoded(&self) -> &Bytes {
        &self.0.bytes
    }
}

/// A `WatchResponse`: one built for this stream, or a shared event.
#[derive(Debug, Clone)]
pub enum WatchFrame {
    /// A response built for this stream (a snapshot, `synced`, a replayed
    /// event).
    Message(Box<v1::WatchResponse>),
    /// `WatchResponse { event }` around an event encoded once.
    Event(SharedEvent),
}

/// Field number of `WatchResponse.event`.
const WATCH_RESPONSE_EVENT: u32 = 3;

impl Frame for WatchFrame {
    fn encode_frame(&self, buf: &mut impl BufMut) {
        match self {
            WatchFrame::Message(message) => message.encode_raw(buf),
            WatchFrame::Event(shared) => {
                // An embedded message is a length-delimited field holding
                // the message's own encoding.
                encode_key(WATCH_RESPONSE_EVENT, WireType::LengthDelimited, buf);
                encode_varint(shared.encoded().len() as u64, buf);
                buf.put_slice(shared.encoded());
            }
        }
    }
}

impl WatchFrame {
    /// The response it encodes (clones a shared event).
    pub fn to_message(&self) -> v1::WatchResponse {
        match self {
            WatchFrame::Message(message) => (**message).clone(),
            WatchFrame::Event(shared) => v1::WatchResponse {
                kind: Some(v1::watch_response::Kind::Event(shared.event().clone())),
            },
        }
    }
}

/// A `JobEvent`: one built for this stream, or a shared one.
#[derive(Debug, Clone)]
pub enum EventFrame {
    /// An event of this stream only (a replayed one).
    Message(Box<v1::JobEvent>),
    /// An event encoded once.
    Shared(SharedEvent),
}

impl EventFrame {
    /// The event.
    pub fn event(&self) -> &v1::JobEvent {
        match self {
            EventFrame::Message(event) => event,
            EventFrame::Shared(shared) => shared.event(),
        }
    }
}

impl Frame for EventFrame {
    fn encode_frame(&self, buf: &mut impl BufMut) {
        match self {
            EventFrame::Message(event) => event.encode_raw(buf),
            EventFrame::Shared(shared) => buf.put_slice(shared.encoded()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> v1::JobEvent {
        v1::JobEvent {
            seq: 300,
            result_key: "k".repeat(200),
            job_status: v1::JobStatus::Active as i32,
            kind: Some(v1::job_event::Kind::Transition(v1::TaskTransition {
                task_index: 3,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn encoded(frame: &impl Frame) -> Vec<u8> {
        let mut buf = Vec::new();
        frame.encode_frame(&mut buf);
        buf
    }

    #[test]
    fn a_shared_event_frame_is_the_watch_response_prost_would_encode() {
        let shared = SharedEvent::new(Arc::new(event()));
        let frame = WatchFrame::Event(shared);
        let expected = v1::WatchResponse {
            kind: Some(v1::watch_response::Kind::Event(event())),
        }
        .encode_to_vec();
        assert_eq!(encoded(&frame), expected);
        assert_eq!(frame.to_message().encode_to_vec(), expected);
    }

    #[test]
    fn built_frames_encode_their_message() {
        let synced = v1::WatchResponse {
            kind: Some(v1::watch_response::Kind::Synced(v1::Synced {
                head_seq: 7,
                server_id: "s".into(),
            })),
        };
        let frame = WatchFrame::Message(Box::new(synced.clone()));
        assert_eq!(encoded(&frame), synced.encode_to_vec());
        assert_eq!(
            encoded(&EventFrame::Message(Box::new(event()))),
            event().encode_to_vec()
        );
    }

    #[test]
    fn a_shared_event_frame_is_the_job_event() {
        let frame = EventFrame::Shared(SharedEvent::new(Arc::new(event())));
        assert_eq!(encoded(&frame), event().encode_to_vec());
        assert_eq!(frame.event(), &event());
    }
}
