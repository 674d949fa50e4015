//! A request body of the local backend, as a submit and as a query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retouch_server::aliyun::ApiKind;

fuzz_target!(|data: &[u8]| {
    for api in [ApiKind::InstanceMatting, ApiKind::ObjectRemoval] {
        if let (Ok(tasks), _) = retouch_server::parsers::local_request(api, data) {
            assert!((1..=10).contains(&tasks));
        }
    }
});
