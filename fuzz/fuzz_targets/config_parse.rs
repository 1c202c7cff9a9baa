//! `Config::from_yaml` on arbitrary text: never panics; a refusal lists at least one problem,
//! and every problem's line and column point into the text (or just past its end).
//!
//! Lines are counted as YAML parsers count them: CR, LF and CRLF break lines, and so (in YAML
//! 1.1, which libyaml follows) do NEL, LS and PS.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use portcullis_policy::Config;

fuzz_target!(|data: &[u8]| {
    // Config files are read as UTF-8; anything else is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Err(err) = Config::from_yaml(text, Path::new("/etc/portcullis/config.yaml")) else {
        return;
    };
    assert!(!err.problems.is_empty(), "a refusal without a problem");
    let lines = line_count(text);
    for p in &err.problems {
        assert!(!p.message.is_empty());
        if let Some(line) = p.line {
            assert!(
                (1..=lines + 1).contains(&line),
                "line {line} of {lines}: {p}"
            );
        }
        if let Some(column) = p.column {
            assert!(column >= 1, "column {column}: {p}");
        }
    }
    // Rendering the error (what `portcullis check` prints) must not panic either.
    let _ = err.to_string();
});

fn line_count(text: &str) -> usize {
    let mut lines = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                chars.next_if_eq(&'\n');
                lines += 1;
            }
            '\n' | '\u{85}' | '\u{2028}' | '\u{2029}' => lines += 1,
            _ => {}
        }
    }
    lines
}
