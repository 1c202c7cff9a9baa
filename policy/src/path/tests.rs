//! Tests for path normalisation: fixed examples and properties.

use super::*;
use proptest::prelude::*;

fn norm(raw: &str) -> Result<String, PathError> {
    normalize_path(raw).map(|p| p.as_str().to_owned())
}

#[test]
fn common_paths_are_taken_as_they_are() {
    for raw in [
        "/",
        "/a",
        "/a/b/",
        "/api/v1/items:batch",
        "/~user/a.b-c_d!$&'()*+,=:@",
        "/..a/b..",
    ] {
        assert!(is_normal(raw), "{raw}");
    }
    for raw in [
        "", "a", "//", "/a//b", "/a/./b", "/a/..", "/.", "/a%41", "/a;b", "/é", "/a b", "/a\\b",
    ] {
        assert!(!is_normal(raw), "{raw}");
    }
}

#[test]
fn examples() {
    let cases = [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/public/../admin", "/admin"),
        ("/public/%2e%2e/admin", "/admin"),
        ("/public/%2E%2E/admin", "/admin"),
        ("/public/.%2e/admin", "/admin"),
        ("/public/%2e./admin", "/admin"),
        ("//a///b", "/a/b"),
        ("/a/.", "/a/"),
        ("/a/..", "/"),
        ("/a/b/..", "/a/"),
        ("/..", "/"),
        ("/../../x", "/x"),
        ("/.", "/"),
        ("//", "/"),
        ("/a//", "/a/"),
        ("/a/./b/../c", "/a/c"),
        ("/a/...", "/a/..."),
        ("/a/..b", "/a/..b"),
        ("/%7e", "/~"),
        ("/%41%62", "/Ab"),
        ("/%c3%a9", "/%C3%A9"),
        ("/%3a%40", "/%3A%40"),
        ("/%25", "/%25"),
        ("/a b", "/a%20b"),
        ("/é", "/%C3%A9"),
        ("/a?b#c", "/a%3Fb%23c"),
        ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
    ];
    for (input, want) in cases {
        assert_eq!(norm(input).as_deref(), Ok(want), "{input}");
    }
}

#[test]
fn rejections() {
    use PathError::*;
    let cases = [
        ("", NotAbsolute),
        ("a/b", NotAbsolute),
        ("*", NotAbsolute),
        ("/a/%2fb", EncodedSlash),
        ("/a/%2Fb", EncodedSlash),
        ("/a\\b", Backslash),
        ("/a%5cb", Backslash),
        ("/a%5Cb", Backslash),
        ("/a%00", Nul),
        ("/a\0", Nul),
        ("/a\tb", ControlCharacter),
        ("/a\x7f", ControlCharacter),
        ("/a%0a", ControlCharacter),
        ("/a%1F", ControlCharacter),
        ("/a%7f", ControlCharacter),
        ("/a%zz", InvalidEncoding),
        ("/a%4", InvalidEncoding),
        ("/a%", InvalidEncoding),
        ("/a%%41", InvalidEncoding),
    ];
    for (input, want) in cases {
        assert_eq!(norm(input), Err(want), "{input:?}");
    }
    assert_eq!(
        norm(&format!("/{}", "a".repeat(8191))).map(|p| p.len()),
        Ok(8192)
    );
    assert_eq!(norm(&format!("/{}", "a".repeat(8192))), Err(TooLong));
    // Growth by encoding past the limit is refused too.
    assert_eq!(norm(&format!("/{}", " ".repeat(3000))), Err(TooLong));
}

#[test]
fn prefix_matching_is_on_segment_boundaries() {
    assert!(prefix_matches("/api", "/api"));
    assert!(prefix_matches("/api", "/api/"));
    assert!(prefix_matches("/api", "/api/x"));
    assert!(!prefix_matches("/api", "/apix"));
    assert!(!prefix_matches("/api", "/"));
    assert!(prefix_matches("/", "/"));
    assert!(prefix_matches("/", "/anything/at/all"));
}

/// Path-like strings rich in the characters that matter to the normaliser.
fn pathish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("//".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%41".to_owned()),
        Just("%7e".to_owned()),
        Just("%c3".to_owned()),
        Just("%25".to_owned()),
        Just("%".to_owned()),
        Just("%2f".to_owned()),
        Just(" ".to_owned()),
        Just("é".to_owned()),
        "[a-z]{1,3}",
        any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| format!("/{}", v.concat()))
}

proptest! {
    #[test]
    fn never_panics(raw in any::<String>()) {
        let _ = normalize_path(&raw);
    }

    #[test]
    fn idempotent_and_canonical(raw in pathish()) {
        if let Ok(once) = normalize_path(&raw) {
            let s = once.as_str();
            prop_assert!(s.starts_with('/'));
            prop_assert!(!s.contains("/../"), "{}", s);
            prop_assert!(!s.contains("/./"), "{}", s);
            prop_assert!(!s.contains("//"), "{}", s);
            prop_assert!(!s.ends_with("/.."), "{}", s);
            prop_assert!(!s.ends_with("/."), "{}", s);
            let twice = normalize_path(s);
            prop_assert_eq!(twice, Ok(once.clone()));
        }
    }

    #[test]
    fn paths_taken_as_they_are_normalise_to_themselves(raw in pathish(), any in any::<String>()) {
        for raw in [raw, format!("/{any}")] {
            if is_normal(&raw) {
                prop_assert_eq!(normalize_in_full(&raw).map(|p| p.0), Ok(raw.clone()));
            }
            prop_assert_eq!(normalize_path(&raw), normalize_in_full(&raw));
        }
    }

    #[test]
    fn idempotent_on_arbitrary_input(raw in any::<String>()) {
        let raw = format!("/{raw}");
        if let Ok(once) = normalize_path(&raw) {
            prop_assert!(once.as_str().starts_with('/'));
            prop_assert_eq!(normalize_path(once.as_str()), Ok(once.clone()));
        }
    }
}

#[test]
fn what_upstreams_would_read_differently_is_refused() {
    for (raw, why) in [
        ("/public/..;/admin", PathError::Semicolon),
        ("/public/%2e%2e;x/admin", PathError::Semicolon),
        ("/admin;jsessionid=1", PathError::Semicolon),
        ("/a%3Bb", PathError::Semicolon),
        ("/public/%252e%252e/admin", PathError::DoubleEncoded),
        ("/public/%252E%252E/admin", PathError::DoubleEncoded),
        ("/public/%25%32%65%25%32%65/admin", PathError::DoubleEncoded),
        ("/a%252fb", PathError::DoubleEncoded),
        ("/a%255cb", PathError::DoubleEncoded),
        ("/public/%c0%ae%c0%ae/admin", PathError::NotUtf8),
        ("/a%ff", PathError::NotUtf8),
    ] {
        assert_eq!(normalize_path(raw), Err(why), "{raw}");
    }
    // A percent sign that is data stays data, and UTF-8 stays UTF-8.
    assert_eq!(normalize_path("/100%25").unwrap().as_str(), "/100%25");
    assert_eq!(normalize_path("/a%2541").unwrap().as_str(), "/a%2541");
    assert_eq!(normalize_path("/caf%C3%A9").unwrap().as_str(), "/caf%C3%A9");
}
