//! The writer's time stamps: a record's `time` is formatted once a second in full, then only
//! its microseconds (most records of a busy log share their second).

use std::time::SystemTime;

/// Records' `time`: RFC 3339 UTC with microseconds (`2025-01-01T00:00:00.000000Z`), formatted
/// in full once a second; within that second only the microseconds are written.
#[derive(Default)]
pub(super) struct TimeStamp {
    /// The second formatted last, and its text up to the fraction (`2025-01-01T00:00:00.`).
    second: Option<(u64, String)>,
}

impl TimeStamp {
    pub(super) fn format(&mut self, t: SystemTime) -> String {
        let since_epoch = t.duration_since(SystemTime::UNIX_EPOCH).ok();
        if let (Some(d), Some((second, prefix))) = (since_epoch, &self.second) {
            if d.as_secs() == *second {
                let mut text = String::with_capacity(prefix.len() + 7);
                text.push_str(prefix);
                let micros = d.subsec_micros();
                for place in [100_000, 10_000, 1_000, 100, 10, 1] {
                    text.push(char::from(b'0' + (micros / place % 10) as u8));
                }
                text.push('Z');
                return text;
            }
        }
        let text = humantime::format_rfc3339_micros(t).to_string();
        // `YYYY-MM-DDTHH:MM:SS.ffffffZ`: the prefix is the first 20 bytes.
        self.second = since_epoch
            .filter(|_| text.len() == 27 && text.as_bytes()[19] == b'.')
            .map(|d| (d.as_secs(), text[..20].to_owned()));
        text
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::TimeStamp;

    #[test]
    fn time_stamps_within_a_second_match_the_full_format() {
        let mut stamp = TimeStamp::default();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_599);
        for micros in [
            0, 1, 999_999, 123_456, 500_000, 1_000_000, 1_000_001, 2_000_000,
        ] {
            let t = base + Duration::from_micros(micros);
            let expected = humantime::format_rfc3339_micros(t).to_string();
            assert_eq!(stamp.format(t), expected);
        }
    }
}
