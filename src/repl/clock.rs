//! The time of an event as a person reads it: local `HH:MM`, with the date
//! before it for an event of another day (history from yesterday). jiff
//! knows the local time zone, summer time included, without `unsafe`.

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Shows the server's RFC 3339 `time` in `zone`, as of `now`; `None` for a
/// time that is not RFC 3339.
pub(super) fn shown_time(time: &str, zone: &TimeZone, now: Timestamp) -> Option<String> {
    let at = time.parse::<Timestamp>().ok()?.to_zoned_datetime(zone.clone());
    let today = now.to_zoned_datetime(zone.clone()).date();
    let format = if at.date() == today { "%H:%M" } else { "%Y-%m-%d %H:%M" };
    Some(at.strftime(format).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hours_and_minutes_with_the_date_on_another_day() {
        let madrid_winter = TimeZone::fixed(jiff::tz::offset(1));
        let now: Timestamp = "2026-11-30T18:00:00Z".parse().unwrap();
        let cases = [
            ("2026-11-30T13:40:01.123Z", &TimeZone::UTC, Some("13:40")),
            ("2026-11-30T13:40:01.123Z", &madrid_winter, Some("14:40")),
            ("2026-11-29T23:30:00Z", &madrid_winter, Some("00:30")),
            ("2026-11-29T22:59:00Z", &madrid_winter, Some("2026-11-29 23:59")),
            ("yesterday", &TimeZone::UTC, None),
        ];
        for (time, zone, want) in cases {
            assert_eq!(shown_time(time, zone, now).as_deref(), want, "{time}");
        }
    }
}
