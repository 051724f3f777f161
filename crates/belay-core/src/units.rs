//! PostgreSQL's units for setting values (`64MB`, `30s`), read as the server reads them, so
//! that the classifier and the configuration measure a limit the same way.

/// How a capped setting's values are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes; the number without a unit counts `base` bytes (1024 for kB, 8192 for blocks).
    Bytes { base: u64 },
    /// Milliseconds; zero turns the timeout off.
    Millis,
    /// A plain number (workers, a multiplier).
    Number,
}

/// The value of a capped setting in its unit (bytes, milliseconds or a plain number), read
/// as PostgreSQL reads it; `None` when belay cannot read it with certainty, which the caller
/// treats as over any cap. Never smaller than what the server will use: a number with a
/// leading zero (octal to the server) is read as decimal, which is never less.
pub fn measure(unit: Unit, value: &str) -> Option<f64> {
    let v = value.trim();
    let digits_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, rest) = v.split_at(digits_end);
    if number.is_empty() || number == "." {
        return None;
    }
    let n: f64 = number.parse().ok()?;
    let factor = match (unit, rest.trim()) {
        (Unit::Bytes { base }, "") => base as f64,
        (Unit::Bytes { .. }, "B") => 1.0,
        (Unit::Bytes { .. }, "kB") => 1024.0,
        (Unit::Bytes { .. }, "MB") => 1024.0 * 1024.0,
        (Unit::Bytes { .. }, "GB") => 1024.0 * 1024.0 * 1024.0,
        (Unit::Bytes { .. }, "TB") => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        (Unit::Millis, "") | (Unit::Millis, "ms") => 1.0,
        (Unit::Millis, "us") => 0.001,
        (Unit::Millis, "s") => 1000.0,
        (Unit::Millis, "min") => 60_000.0,
        (Unit::Millis, "h") => 3_600_000.0,
        (Unit::Millis, "d") => 86_400_000.0,
        (Unit::Number, "") => 1.0,
        _ => return None,
    };
    let measured = n * factor;
    measured.is_finite().then_some(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_measured_as_the_server_reads_them() {
        let kb = Unit::Bytes { base: 1024 };
        assert_eq!(measure(kb, "4096"), Some(4096.0 * 1024.0));
        assert_eq!(measure(kb, " 4GB "), Some(4.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(measure(kb, "1.5MB"), Some(1.5 * 1024.0 * 1024.0));
        assert_eq!(measure(Unit::Bytes { base: 8192 }, "100"), Some(819_200.0));
        assert_eq!(measure(kb, "4gb"), None, "units are case-sensitive");
        assert_eq!(measure(kb, "0x10"), None);
        assert_eq!(measure(kb, "-1"), None);
        assert_eq!(measure(Unit::Millis, "30s"), Some(30_000.0));
        assert_eq!(measure(Unit::Millis, "2min"), Some(120_000.0));
        assert_eq!(measure(Unit::Millis, "500"), Some(500.0));
        assert_eq!(measure(Unit::Millis, "1e9"), None);
        assert_eq!(measure(Unit::Number, "2.5"), Some(2.5));
        assert_eq!(measure(Unit::Number, "2 workers"), None);
    }
}
