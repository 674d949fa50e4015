//! An upstream answer: two bytes of status, a gateway code flag, the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<3>() else {
        return;
    };
    let status = 100 + u16::from_le_bytes([head[0], head[1]]) % 500;
    let gateway = (head[2] & 1 == 1).then_some("Throttled");
    if retouch_server::parsers::upstream_answer(status, gateway, body).is_ok() {
        assert!((200..300).contains(&status));
    }
});
