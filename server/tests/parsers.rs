//! Properties of every parser of untrusted input (`retouch_server::parsers`),
//! checked on generated input in `cargo test`. The cargo-fuzz targets in
//! `server/fuzz/` drive the same entry points with coverage guidance.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use retouch_server::aliyun::{ApiKind, WireTask};
use retouch_server::outbound::non_public;
use retouch_server::parsers;
use retouch_server::validate::{MAX_URL_LEN, canonical_url};

/// Strings that look like URLs, with the characters that have caused
/// trouble: spaces, controls, bidi overrides, non-ASCII, credentials.
fn url_like() -> impl Strategy<Value = String> {
    (
        prop_oneof!["http", "https", "HTTP", "hTtPs", "ftp", "file"],
        prop_oneof!["", "user:pw@", "u@"],
        "[a-zA-Z0-9.-]{1,20}|\\[::1\\]|[0-9]{1,10}",
        proptest::option::of(0u32..70000),
        "[ -~\u{00e9}\u{202e}\u{0000}\n\t]{0,60}",
    )
        .prop_map(|(scheme, userinfo, host, port, rest)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{userinfo}{host}{port}/{rest}")
        })
}

/// URLs that must be accepted: http(s), a host, a port, and a path and
/// query with characters that need percent-encoding (but no whitespace,
/// controls or bidi marks).
fn valid_url() -> impl Strategy<Value = String> {
    (
        prop_oneof!["http", "https", "HTTP", "hTtPs"],
        "[a-z][a-zA-Z0-9]{0,9}(\\.[a-z][a-zA-Z0-9]{0,9}){0,2}",
        proptest::option::of(1u32..65536),
        "[!-~\u{00e9}\u{4e2d}]{0,60}",
    )
        .prop_map(|(scheme, host, port, rest)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{host}{port}/{rest}")
        })
        .prop_filter("no userinfo, fragment or backslash", |url| {
            !url.contains('@') && !url.contains('#') && !url.contains('\\')
        })
}

/// A small valid PNG of `side` px, to mutate.
fn png(side: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::RgbImage::from_pixel(side, side, image::Rgb([10, 200, 30]))
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// What passes validation is canonical, bounded, free of whitespace
    /// and controls, and validates to itself: exactly what is sent.
    #[test]
    fn canonical_urls_are_fixed_points(raw in prop_oneof![url_like(), any::<String>()]) {
        if let Ok(canonical) = canonical_url(&raw) {
            prop_assert!(canonical.len() <= MAX_URL_LEN);
            prop_assert!(!canonical.chars().any(|c| c.is_whitespace() || c.is_control()));
            prop_assert!(!canonical.contains('@'));
            prop_assert_eq!(canonical_url(&canonical), Ok(canonical.clone()));
        }
    }

    /// Valid URLs are accepted, and their canonical form is a fixed point.
    #[test]
    fn valid_urls_are_accepted_in_canonical_form(raw in valid_url()) {
        let canonical = canonical_url(&raw);
        prop_assert!(canonical.is_ok(), "{:?} refused: {:?}", raw, canonical);
        let canonical = canonical.unwrap();
        prop_assert_eq!(canonical_url(&canonical), Ok(canonical.clone()));
        prop_assert!(canonical.is_ascii(), "{}", canonical);
    }

    /// A valid submission comes back with every URL canonical, in order.
    #[test]
    fn valid_submissions_are_sent_canonical(
        urls in proptest::collection::vec((valid_url(), valid_url()), 1..=10),
        kernel in (0u32..30).prop_map(|k| 2 * k + 1),
    ) {
        let tasks: Vec<WireTask> = urls
            .iter()
            .map(|(image, mask)| WireTask {
                image: image.clone(),
                mask: mask.clone(),
                kernel_size: Some(kernel),
                ..WireTask::default()
            })
            .collect();
        let sent = parsers::submission(ApiKind::ObjectRemoval, tasks);
        prop_assert!(sent.is_ok(), "{:?}", sent);
        for (sent, (image, mask)) in sent.unwrap().iter().zip(&urls) {
            prop_assert_eq!(Ok(sent.image.clone()), canonical_url(image));
            prop_assert_eq!(Ok(sent.mask.clone()), canonical_url(mask));
            prop_assert_eq!(canonical_url(&sent.image), Ok(sent.image.clone()));
        }
    }

    /// A submission's tasks come back canonical, in order, and only when
    /// every field is valid (the rejection side, on loose input).
    #[test]
    fn submissions_validate_to_what_is_sent(
        urls in proptest::collection::vec((url_like(), url_like()), 0..12),
        kernel in proptest::option::of(0u32..80),
    ) {
        let tasks: Vec<WireTask> = urls
            .iter()
            .map(|(image, mask)| WireTask {
                image: image.clone(),
                mask: mask.clone(),
                kernel_size: kernel,
                ..WireTask::default()
            })
            .collect();
        if let Ok(sent) = parsers::submission(ApiKind::ObjectRemoval, tasks.clone()) {
            prop_assert_eq!(sent.len(), tasks.len());
            for (sent, given) in sent.iter().zip(&tasks) {
                prop_assert_eq!(Ok(sent.image.clone()), canonical_url(&given.image));
                prop_assert_eq!(Ok(sent.mask.clone()), canonical_url(&given.mask));
            }
        }
    }

    /// Any upstream answer is data or an error, never a panic; data only
    /// with a 2xx status.
    #[test]
    fn upstream_answers_never_panic(
        status in 100u16..600,
        gateway in proptest::option::of("[ -~]{0,20}"),
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            "\\{\"code\":-?[0-9]{1,12},\"data\":\\{\"result_key\":\"[a-z0-9]{0,8}\",\"task_list\":\\[\\]\\},\"message\":\"[ -~]{0,10}\"\\}"
                .prop_map(String::into_bytes),
        ],
    ) {
        if parsers::upstream_answer(status, gateway.as_deref(), &body).is_ok() {
            prop_assert!((200..300).contains(&status));
        }
    }

    /// The local backend's request parsing answers a code for any body.
    #[test]
    fn local_backend_requests_never_panic(
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            "\\{\"data\":\\{\"task_list\":\\[(\\{\"image\":\"[ -~]{0,20}\",\"mask\":\"[ -~]{0,20}\",\"kernel_size\":-?[0-9]{1,3}\\},?){0,12}\\],\"result_key\":\"[ -~]{0,10}\"\\}\\}"
                .prop_map(String::into_bytes),
        ],
    ) {
        for api in [ApiKind::InstanceMatting, ApiKind::ObjectRemoval] {
            let (submit, _) = parsers::local_request(api, &body);
            if let Ok(tasks) = submit {
                prop_assert!((1..=10).contains(&tasks));
            }
        }
    }

    /// Images with bytes flipped, cut or appended are accepted or refused
    /// with a code; headers are read before any decoding.
    #[test]
    fn mutated_images_are_refused_or_accepted_never_crash(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = png(400);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len()));
        }
        let _ = parsers::upload(&bytes);
        let _ = parsers::input_pair(&bytes, &bytes);
    }

    /// An IPv4 address and its IPv4-mapped IPv6 form are judged alike.
    #[test]
    fn mapped_addresses_are_judged_as_their_ipv4(octets in any::<[u8; 4]>()) {
        let v4 = Ipv4Addr::from(octets);
        prop_assert_eq!(
            non_public(IpAddr::V4(v4)),
            non_public(IpAddr::V6(v4.to_ipv6_mapped()))
        );
    }

    /// Any tokens file parses or names its broken line.
    #[test]
    fn tokens_files_parse_or_name_the_line(text in "[ -~\n#=:]{0,200}") {
        if let Err(error) = parsers::tokens_file(&text) {
            prop_assert!(error.starts_with("line ") || error.contains("appears twice"), "{}", error);
        }
    }
}
