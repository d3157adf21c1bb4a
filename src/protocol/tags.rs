//! Tags: the `@key=value;… ` prefix that version 2 puts before a room event
//! (`seq`, `time`) and an `OK JOIN` (`epoch`, `seq`, `token`) for a
//! connection that asked for them with `TAGS`; and the server's time, UTC to
//! the millisecond, as RFC 3339.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

/// The tags of one server line, as a client reads them. Tags it does not
/// know are skipped: later versions may add some.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags {
    pub seq: Option<u64>,
    /// RFC 3339, as the server wrote it.
    pub time: Option<String>,
    pub epoch: Option<String>,
    pub token: Option<String>,
}

impl Tags {
    /// Splits `@tags rest` into its tags and the rest; a line without tags
    /// is all rest. `None` when the tags are not `key=value` pairs.
    pub fn split(line: &str) -> Option<(Tags, &str)> {
        let Some(tagged) = line.strip_prefix('@') else { return Some((Tags::default(), line)) };
        let (tags, rest) = tagged.split_once(' ')?;
        let mut parsed = Tags::default();
        for pair in tags.split(';') {
            let (key, value) = pair.split_once('=')?;
            match key {
                "seq" => parsed.seq = Some(value.parse().ok()?),
                "time" => parsed.time = Some(value.to_owned()),
                "epoch" => parsed.epoch = Some(value.to_owned()),
                "token" => parsed.token = Some(value.to_owned()),
                _ => {}
            }
        }
        Some((parsed, rest))
    }

    /// The time as milliseconds since the Unix epoch, if there is one the
    /// server wrote.
    pub fn time_ms(&self) -> Option<u64> {
        self.time.as_deref().and_then(parse_time)
    }
}

impl fmt::Display for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = '@';
        let mut tag = |f: &mut fmt::Formatter<'_>, key: &str, value: &dyn fmt::Display| {
            let result = write!(f, "{sep}{key}={value}");
            sep = ';';
            result
        };
        if let Some(epoch) = &self.epoch {
            tag(f, "epoch", epoch)?;
        }
        if let Some(seq) = self.seq {
            tag(f, "seq", &seq)?;
        }
        if let Some(time) = &self.time {
            tag(f, "time", time)?;
        }
        if let Some(token) = &self.token {
            tag(f, "token", token)?;
        }
        Ok(())
    }
}

/// The prefix of a tagged event line, `@seq=<seq>;time=<time> `, built
/// once per event and shared by every reader that asked for tags.
pub fn event_prefix(seq: u64, time_ms: u64) -> String {
    let mut prefix = String::with_capacity(48);
    let _ = write!(prefix, "@seq={seq};time={} ", Time(time_ms));
    prefix
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A time in milliseconds since the Unix epoch, shown as RFC 3339 in UTC
/// with milliseconds: `2026-11-30T13:40:01.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub u64);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (days, ms) = (self.0 / 86_400_000, self.0 % 86_400_000);
        let (year, month, day) = civil_from_days(days as i64);
        let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        write!(f, "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
    }
}

/// Reads a time as the server writes it (`2026-11-30T13:40:01.123Z`; the
/// fraction may have any number of digits or be absent) into milliseconds
/// since the Unix epoch.
pub fn parse_time(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z').or_else(|| text.strip_suffix('z'))?;
    let (date, clock) = text.split_once(['T', 't'])?;
    let number = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u64>().ok()).flatten()
    };
    let mut date = date.split('-');
    let (year, month, day) = (number(date.next()?, 4)?, number(date.next()?, 2)?, number(date.next()?, 2)?);
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut clock = clock.split(':');
    let (h, m, s) = (number(clock.next()?, 2)?, number(clock.next()?, 2)?, number(clock.next()?, 2)?);
    if date.next().is_some()
        || clock.next().is_some()
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || h > 23
        || m > 59
        || s > 60
    {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms = fraction.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0, |ms, b| ms * 10 + u64::from(b - b'0'));
    let days = u64::try_from(days_from_civil(year as i64, month as u32, day as u32)).ok()?;
    Some(((days * 24 + h) * 60 + m) * 60_000 + s * 1000 + ms)
}

// Howard Hinnant's algorithms (`chrono`-compatible date arithmetic), for a
// proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_to_the_millisecond() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_796_046_001_123, "2026-11-30T13:40:01.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
        ];
        for (ms, text) in cases {
            assert_eq!(Time(ms).to_string(), text);
            assert_eq!(parse_time(text), Some(ms), "{text}");
        }
        assert_eq!(parse_time("2026-11-30T13:40:01Z"), Some(1_796_046_001_000));
        assert_eq!(parse_time("2026-11-30T13:40:01.1Z"), Some(1_796_046_001_100));
        for bad in [
            "",
            "2026-12-01",
            "2026-12-01T16:20:01.123",
            "2026-13-01T00:00:00Z",
            "2026-12-01T16:20Z",
            "x026-12-01T16:20:01Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_day_round_trips() {
        for day in (0..200_000u64).step_by(7) {
            let ms = day * 86_400_000 + 45_296_789;
            assert_eq!(parse_time(&Time(ms).to_string()), Some(ms));
        }
    }

    #[test]
    fn tags_split_from_the_line() {
        let (tags, rest) = Tags::split("@seq=1042;time=2026-11-30T13:40:01.123Z;later=x MSG Ana hola").unwrap();
        assert_eq!(
            (tags.seq, tags.time.as_deref(), rest),
            (Some(1042), Some("2026-11-30T13:40:01.123Z"), "MSG Ana hola")
        );
        let (tags, rest) = Tags::split("@epoch=k3f9a;seq=0;token=q8Zr OK JOIN Carlos").unwrap();
        assert_eq!(
            (tags.epoch.as_deref(), tags.seq, tags.token.as_deref(), rest),
            (Some("k3f9a"), Some(0), Some("q8Zr"), "OK JOIN Carlos")
        );
        assert_eq!(Tags::split("MSG Ana hola").unwrap(), (Tags::default(), "MSG Ana hola"));
        for bad in ["@seq=x MSG a b", "@seq MSG a b", "@seq=1"] {
            assert!(Tags::split(bad).is_none(), "{bad:?}");
        }
        assert_eq!(event_prefix(7, 0), "@seq=7;time=1970-01-01T00:00:00.000Z ");
    }
}
