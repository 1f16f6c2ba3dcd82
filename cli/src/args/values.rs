//! The strict parsers for values clap cannot check by itself: `--addr` lists,
//! `SERVICE=N`, durations, `k=v` labels.

use std::collections::BTreeMap;

use super::{Addrs, Labels, ScaleTarget};

/// `A[,B..]`: split on commas, trimmed, none empty.
pub fn parse_addrs(s: &str) -> Result<Addrs, String> {
    let addrs: Vec<String> = s.split(',').map(|a| a.trim().to_string()).collect();
    if addrs.iter().any(String::is_empty) {
        return Err(format!(
            "`{s}` is not a list of addresses: expected HOST:PORT[,HOST:PORT..]"
        ));
    }
    Ok(Addrs(addrs))
}

/// `SERVICE=N` with SERVICE `NAME` or `STACK/NAME` and N a non-negative integer.
pub fn parse_scale(s: &str) -> Result<ScaleTarget, String> {
    let Some((service, n)) = s.split_once('=') else {
        return Err(format!("`{s}` is not SERVICE=N (e.g. web=3)"));
    };
    let parts: Vec<&str> = service.split('/').collect();
    let valid_name = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if parts.len() > 2 || !parts.iter().all(|p| valid_name(p)) {
        return Err(format!(
            "`{service}` is not a service name: expected SERVICE or STACK/SERVICE"
        ));
    }
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{n}` in `{s}` is not a number of replicas: expected a non-negative integer"
        ));
    }
    let replicas = n
        .parse::<u64>()
        .map_err(|_| format!("`{n}` in `{s}` is too large a number of replicas"))?;
    Ok(ScaleTarget {
        service: service.to_string(),
        replicas,
    })
}

/// `N` followed by `s`, `m`, `h` or `d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: expected e.g. 30s, 10m, 12h or 90d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "`{s}` is not a duration: the unit must be s, m, h or d"
            ))
        }
    };
    if n == 0 {
        return Err(format!(
            "`{s}` is not a usable lifetime: it must be more than 0"
        ));
    }
    Ok(std::time::Duration::from_secs(n.saturating_mul(secs)))
}

/// `k=v[,k=v..]`; keys non-empty and not repeated, values may be empty.
pub fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut labels = BTreeMap::new();
    for item in s.split(',') {
        let item = item.trim();
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!("`{item}` is not a label: expected k=v"));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("`{item}` has an empty label key"));
        }
        if labels.insert(k.to_string(), v.trim().to_string()).is_some() {
            return Err(format!("label `{k}` is given twice"));
        }
    }
    Ok(Labels(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86400)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn labels() {
        let l = parse_labels("zone=a, gpu=,tier=db").unwrap();
        assert_eq!(
            l.0,
            BTreeMap::from([
                ("gpu".to_string(), String::new()),
                ("tier".to_string(), "db".to_string()),
                ("zone".to_string(), "a".to_string()),
            ])
        );
        assert!(parse_labels("zone").is_err());
        assert!(parse_labels("=a").is_err());
        assert!(parse_labels("a=1,a=2").is_err());
    }
}
