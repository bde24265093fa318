//! A certificate's validity period, read from its DER (the few fields up to `validity`), so an
//! expired or not-yet-valid certificate stops the boot instead of failing every handshake.
//!
//! rustls checks validity only on the client's side; reading the dates needs no X.509 library:
//! `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber
//! INTEGER, signature SEQUENCE, issuer SEQUENCE, validity SEQUENCE { notBefore Time, notAfter
//! Time }, ... } ... }` (RFC 5280 §4.1), each Time a UTCTime or a GeneralizedTime in UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (negative before 1970).
type Seconds = i64;

/// Fails unless `now` is within the certificate's validity period.
pub(crate) fn check_now(der: &[u8]) -> Result<(), String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    check(der, now)
}

pub(crate) fn check(der: &[u8], now: Seconds) -> Result<(), String> {
    let (not_before, not_after) =
        period(der).ok_or("the certificate's validity dates cannot be read")?;
    if now < not_before {
        return Err(format!(
            "the certificate is not valid yet (from {})",
            describe(not_before)
        ));
    }
    if now > not_after {
        return Err(format!(
            "the certificate expired on {}",
            describe(not_after)
        ));
    }
    Ok(())
}

/// `(notBefore, notAfter)`, or None when the DER is not shaped as a certificate.
pub(crate) fn period(der: &[u8]) -> Option<(Seconds, Seconds)> {
    let (cert, _) = element(der, 0x30)?;
    let (tbs, _) = element(cert, 0x30)?;
    let mut rest = tbs;
    // [0] EXPLICIT version, when present.
    if rest.first() == Some(&0xA0) {
        rest = element(rest, 0xA0)?.1;
    }
    rest = element(rest, 0x02)?.1; // serialNumber
    rest = element(rest, 0x30)?.1; // signature
    rest = element(rest, 0x30)?.1; // issuer
    let (validity, _) = element(rest, 0x30)?;
    let (not_before, after) = time(validity)?;
    let (not_after, _) = time(after)?;
    Some((not_before, not_after))
}

/// The content of the element at the start of `input` if its tag is `tag`, and what follows
/// it. Only definite lengths (DER has no other).
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    let (content, after) = rest.split_at_checked(len)?;
    Some((content, after))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), and
/// what follows it.
fn time(input: &[u8]) -> Option<(Seconds, &[u8])> {
    let (tag, (content, rest)) = match input.first()? {
        0x17 => (0x17, element(input, 0x17)?),
        0x18 => (0x18, element(input, 0x18)?),
        _ => return None,
    };
    let text = std::str::from_utf8(content).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| digits.get(range)?.parse::<i64>().ok();
    let (year, at) = if tag == 0x17 {
        if digits.len() != 12 {
            return None;
        }
        let yy = number(0..2)?;
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
    } else {
        if digits.len() != 14 {
            return None;
        }
        (number(0..4)?, 4)
    };
    let month = number(at..at + 2)?;
    let day = number(at + 2..at + 4)?;
    let hour = number(at + 4..at + 6)?;
    let minute = number(at + 6..at + 8)?;
    let second = number(at + 8..at + 10)?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3600 + minute * 60 + second, rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2031-05-04 12:00:00 UTC`.
fn describe(at: Seconds) -> String {
    let days = at.div_euclid(86_400);
    let secs = at.rem_euclid(86_400);
    // The inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(describe(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(describe(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn times() {
        let utc = [
            0x17, 13, b'4', b'9', b'1', b'2', b'3', b'1', b'2', b'3', b'5', b'9', b'5', b'9', b'Z',
        ];
        assert_eq!(
            time(&utc).map(|(t, _)| describe(t)),
            Some("2049-12-31 23:59:59 UTC".into())
        );
        let old = [
            0x17, 13, b'5', b'0', b'0', b'1', b'0', b'1', b'0', b'0', b'0', b'0', b'0', b'0', b'Z',
        ];
        assert_eq!(
            time(&old).map(|(t, _)| describe(t)),
            Some("1950-01-01 00:00:00 UTC".into())
        );
        let general = b"\x18\x0f40960101000000Z";
        assert_eq!(
            time(general).map(|(t, _)| describe(t)),
            Some("4096-01-01 00:00:00 UTC".into())
        );
        for bad in [
            &b"\x17\x0d49123123595"[..],
            b"\x17\x0d4913312359592",
            b"\x18\x0f4096010100000+Z",
            b"\x17\xff",
        ] {
            assert_eq!(time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn truncated_or_garbage_der_is_refused_not_a_panic() {
        assert_eq!(period(&[]), None);
        assert_eq!(period(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(period(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
        for n in 0..=255u8 {
            let _ = period(&[0x30, n, 0x30, n, 0xA0, n]);
        }
    }
}
