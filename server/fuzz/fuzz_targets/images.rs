//! Upload headers and the local backend's image checks and decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = retouch_server::parsers::upload(data);
    let _ = retouch_server::parsers::input_pair(data, data);
});
