//! Numbers for people: sizes in IEC units (KiB, MiB, GiB) and counts with
//! thousands separators, used by every table this crate and the CLI print.
//!
//! ```
//! use alloc_track::human::{Bytes, Count, SignedBytes};
//! assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
//! assert_eq!(SignedBytes(-3 * 1024 * 1024).to_string(), "-3.0 MiB");
//! assert_eq!(Count(1234567).to_string(), "1,234,567");
//! ```

use std::fmt;

/// A size in bytes, shown in IEC units with one decimal above 1 KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

/// A change in bytes, always shown with its sign (`+0 B` for none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SignedBytes(pub i64);

/// A count with thousands separators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Count(pub u64);

/// A change in a count, always shown with its sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SignedCount(pub i64);

const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

fn write_bytes(f: &mut fmt::Formatter<'_>, sign: &str, bytes: u64) -> fmt::Result {
    let text = if bytes < 1024 {
        format!("{sign}{bytes} B")
    } else {
        let mut value = bytes as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        // 1023.96 KiB would round to "1024.0 KiB": show it as the next unit.
        if value >= 1023.95 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        format!("{sign}{value:.1} {}", UNITS[unit])
    };
    f.pad(&text)
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_bytes(f, "", self.0)
    }
}

impl fmt::Display for SignedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "+" };
        write_bytes(f, sign, self.0.unsigned_abs())
    }
}

fn grouped(sign: &str, value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(sign.len() + digits.len() + digits.len() / 3);
    out.push_str(sign);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&grouped("", self.0))
    }
}

impl fmt::Display for SignedCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "+" };
        f.pad(&grouped(sign, self.0.unsigned_abs()))
    }
}

/// An I/O error as a person reads it: `io::Error`'s text without the
/// " (os error N)" it appends, which says nothing the text does not.
///
/// ```
/// use alloc_track::human::IoError;
/// let error = std::io::Error::from_raw_os_error(2);
/// assert_eq!(IoError(&error).to_string(), "No such file or directory");
/// ```
pub struct IoError<'a>(pub &'a std::io::Error);

impl fmt::Display for IoError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        match text.rfind(" (os error ") {
            Some(cut) => f.write_str(&text[..cut]),
            None => f.write_str(&text),
        }
    }
}

/// `part` as a percentage of `whole`, 0 when `whole` is 0.
pub fn percent(part: f64, whole: f64) -> f64 {
    if whole == 0.0 {
        0.0
    } else {
        100.0 * part / whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_iec_units() {
        assert_eq!(Bytes(0).to_string(), "0 B");
        assert_eq!(Bytes(1023).to_string(), "1023 B");
        assert_eq!(Bytes(1024).to_string(), "1.0 KiB");
        assert_eq!(Bytes(1024 * 1024 - 1).to_string(), "1.0 MiB");
        assert_eq!(Bytes(5 * 1024 * 1024 * 1024).to_string(), "5.0 GiB");
        assert_eq!(Bytes(u64::MAX).to_string(), "16.0 EiB");
        assert_eq!(SignedBytes(0).to_string(), "+0 B");
        assert_eq!(SignedBytes(i64::MIN).to_string(), "-8.0 EiB");
        assert_eq!(format!("{:>9}", Bytes(2048)), "  2.0 KiB");
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(Count(0).to_string(), "0");
        assert_eq!(Count(999).to_string(), "999");
        assert_eq!(Count(1000).to_string(), "1,000");
        assert_eq!(SignedCount(-1_000_000).to_string(), "-1,000,000");
        assert_eq!(SignedCount(12).to_string(), "+12");
    }

    #[test]
    fn percent_of_nothing_is_zero() {
        assert_eq!(percent(5.0, 0.0), 0.0);
        assert_eq!(percent(1.0, 4.0), 25.0);
    }
}
