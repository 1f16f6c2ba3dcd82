//! Numbers and durations as readings and causes print them.

/// About three significant digits, without trailing zeros: `13.666` -> "13.7",
/// `0.42` -> "0.42", `41.0` -> "41", `1234.6` -> "1235".
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    let decimals = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        (2 - a.log10().floor() as i64).clamp(0, 9) as usize
    };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// A fraction as a percentage: `0.35` -> "35%".
pub fn percent(v: f64) -> String {
    format!("{}%", num(v * 100.0))
}

/// As Go prints a `time.Duration` (and so as Kubernetes and Prometheus users read one):
/// `300000` -> "5m0s", `90000` -> "1m30s", `1500` -> "1.5s", `250` -> "250ms",
/// `3600000` -> "1h0m0s", `0` -> "0s".
pub fn duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, rest) = (ms / 3_600_000, (ms / 60_000) % 60, ms % 60_000);
    let s = if rest % 1000 == 0 {
        (rest / 1000).to_string()
    } else {
        let s = format!("{:.3}", rest as f64 / 1000.0);
        s.trim_end_matches('0').to_string()
    };
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let cases = [
            (41.0, "41"),
            (41.0 / 3.0, "13.7"),
            (0.42, "0.42"),
            (0.8, "0.8"),
            (15.0, "15"),
            (1234.6, "1235"),
            (1.5, "1.5"),
            (0.0042, "0.0042"),
            (0.0, "0"),
            (-2.5, "-2.5"),
            (99.96, "100"),
        ];
        for (v, want) in cases {
            assert_eq!(num(v), want, "{v}");
        }
        assert_eq!(percent(0.35), "35%");
        assert_eq!(percent(0.7), "70%");
        assert_eq!(percent(0.123), "12.3%");
    }

    #[test]
    fn durations_as_go_prints_them() {
        let cases = [
            (0, "0s"),
            (250, "250ms"),
            (1500, "1.5s"),
            (5_000, "5s"),
            (90_000, "1m30s"),
            (120_000, "2m0s"),
            (300_000, "5m0s"),
            (3_600_000, "1h0m0s"),
            (3_661_500, "1h1m1.5s"),
        ];
        for (ms, want) in cases {
            assert_eq!(duration(ms), want, "{ms}");
        }
    }
}
