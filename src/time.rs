//! Time as the protocol sees it: the coarse UTC-day epoch and the clock; and the UTC calendar,
//! once for both binaries: [`format_utc_ms`] for what they print, [`parse_utc_ms`] for what
//! admins type (`knockd audit --since`). Civil dates from day numbers and back without a
//! time-zone database (the proleptic Gregorian calendar, as RFC 3339 uses it).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds in one epoch (one UTC day).
pub const EPOCH_SECONDS: u64 = 86_400;

/// The epoch (UTC day number) of a unix time in seconds.
pub fn utc_day(unix_secs: u64) -> u32 {
    u32::try_from(unix_secs / EPOCH_SECONDS).unwrap_or(u32::MAX)
}

/// The current unix time in seconds; 0 when the clock is before 1970.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The current unix time in milliseconds; 0 when the clock is before 1970.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// Day number (days since 1970-01-01) of a civil date; `month` 1-12, `day` 1-31.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1-12, day 1-31) of a day number.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Days in `month` (1-12) of `year`.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC, of unix milliseconds.
pub fn format_utc_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let (h, m, s) = ((secs % 86_400) / 3600, (secs % 3600) / 60, secs % 60);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

/// Why a text is not a time [`parse_utc_ms`] takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Neither RFC 3339 nor unix seconds.
    #[error("`{0}` is not a time; use RFC 3339 in UTC (2026-11-25T13:00:00Z) or unix seconds")]
    NotATime(String),
    /// A time with another offset than UTC, or none.
    #[error("`{0}`: give the time in UTC, ending in Z (2026-11-25T13:00:00Z)")]
    NotUtc(String),
}

/// Parses RFC 3339 in UTC (`2026-11-25T13:00:00Z`, optional fraction, `Z` or `+00:00`; a bare
/// date means its midnight) or unix seconds, into unix milliseconds.
pub fn parse_utc_ms(s: &str) -> Result<u64, TimeError> {
    let bad = || TimeError::NotATime(s.to_string());
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) {
        return t.parse::<u64>().ok().and_then(|v| v.checked_mul(1000)).ok_or_else(bad);
    }
    if !t.is_ascii() || t.len() < 10 {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u32, TimeError> {
        let part = t.get(r).ok_or_else(bad)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    if &t[4..5] != "-" || &t[7..8] != "-" {
        return Err(bad());
    }
    let (y, mo, d) = (i64::from(num(0..4)?), num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return Err(bad());
    }
    let (mut h, mut mi, mut sec, mut ms) = (0, 0, 0, 0u64);
    if t.len() > 10 {
        let rest = &t[10..];
        let zone_at = rest
            .strip_suffix(['Z', 'z'])
            .map(str::len)
            .or_else(|| rest.strip_suffix("+00:00").map(str::len))
            .ok_or_else(|| TimeError::NotUtc(s.to_string()))?;
        let clock = &rest[..zone_at];
        if !(clock.starts_with(['T', 't', ' ']) && clock.len() >= 9 && &clock[3..4] == ":" && &clock[6..7] == ":") {
            return Err(bad());
        }
        let at = |r: std::ops::Range<usize>| num(r.start + 10..r.end + 10);
        (h, mi, sec) = (at(1..3)?, at(4..6)?, at(7..9)?);
        if let Some(frac) = clock.get(9..).filter(|f| !f.is_empty()) {
            let digits = frac.strip_prefix('.').filter(|f| !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()));
            let digits = digits.ok_or_else(bad)?;
            ms = format!("{:0<3}", &digits[..digits.len().min(3)]).parse().map_err(|_| bad())?;
        }
        if h > 23 || mi > 59 || sec > 59 {
            return Err(bad());
        }
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(sec);
    u64::try_from(secs).map(|s| s * 1000 + ms).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_utc_ms(1_795_564_800_123), "2026-11-25 00:00:00.123");
        assert_eq!(format_utc_ms(951_782_400_000), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn times_parse_as_rfc3339_utc_or_unix_seconds() {
        assert_eq!(parse_utc_ms("1795564800"), Ok(1_795_564_800_000));
        assert_eq!(parse_utc_ms("2026-11-25T00:00:00Z"), Ok(1_795_564_800_000));
        assert_eq!(parse_utc_ms("2026-11-25T13:00:00Z"), Ok(1_795_564_800_000 + 13 * 3_600_000));
        assert_eq!(parse_utc_ms("2026-11-25t13:00:00.5z"), Ok(1_795_564_800_000 + 13 * 3_600_000 + 500));
        assert_eq!(parse_utc_ms("2026-11-25 13:00:00+00:00"), Ok(1_795_564_800_000 + 13 * 3_600_000));
        assert_eq!(parse_utc_ms("2026-11-25"), Ok(1_795_564_800_000));
        assert_eq!(parse_utc_ms("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert_eq!(parse_utc_ms("1970-01-01T00:00:00Z"), Ok(0));
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T13:00:00",
            "2026-11-25T13:00:00+01:00",
            "2026-11-25T13:00Z",
            "2026-11-25T13:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2026-11-25T13:00:00Zé",
        ] {
            assert!(parse_utc_ms(bad).is_err(), "{bad}");
        }
        assert!(parse_utc_ms("2026-11-25T13:00:00+01:00").unwrap_err().to_string().contains("UTC"));
    }

    #[test]
    fn format_and_parse_agree() {
        for ms in [0u64, 951_782_400_000, 1_795_564_800_123, 4_102_444_799_999] {
            let text = format_utc_ms(ms).replacen(' ', "T", 1) + "Z";
            assert_eq!(parse_utc_ms(&text), Ok(ms), "{text}");
        }
        for days in [-719_468, -1, 0, 11_016, 20_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn day_boundaries() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(86_399), 0);
        assert_eq!(utc_day(86_400), 1);
        // 2026-11-25T00:00:00Z
        assert_eq!(utc_day(1_795_564_800), 20_782);
    }
}
