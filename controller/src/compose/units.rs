//! Parsers for Compose's little value languages: durations, byte sizes, CPU counts,
//! port and volume short syntax. Pure functions; errors are messages for the user.

use shoal_proto::spec::{PortMode, PortSpec, Protocol};

/// A Go-style duration (`1m30s`, `10s`, `500ms`, `1.5h`) in milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    Ok((duration_ns(s)? / 1e6).floor() as u64)
}

/// A Go-style duration in seconds, keeping fractions (`800ms` is 0.8, `250us` 0.00025).
pub fn parse_duration_secs(s: &str) -> Result<f64, String> {
    Ok(duration_ns(s)? / 1e9)
}

fn duration_ns(s: &str) -> Result<f64, String> {
    let bad =
        || format!("invalid duration `{s}`: use a number with a unit, e.g. 10s, 1m30s, 500ms");
    let t = s.trim();
    if t == "0" {
        return Ok(0.0);
    }
    if t.is_empty() {
        return Err(bad());
    }
    let mut total_ns: f64 = 0.0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total_ns += n * scale;
    }
    Ok(total_ns)
}

/// A byte size as Docker reads memory: `512M`, `1g`, `50MiB`, `1.5GB`, `1024` (binary units).
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "invalid size `{s}`: use a number with an optional unit b, k, m, g, t (e.g. 512m, 1g)"
        )
    };
    let t = s.trim();
    let num_len = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    if num_len == 0 {
        return Err(bad());
    }
    let n: f64 = t[..num_len].parse().map_err(|_| bad())?;
    let unit = t[num_len..].trim_start().to_ascii_lowercase();
    let unit = unit
        .strip_suffix('b')
        .map(|u| u.strip_suffix('i').unwrap_or(u))
        .unwrap_or(&unit);
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    Ok((n * scale) as i64)
}

/// A CPU count (`0.5`, `2`, `"1.25"`) in nano-CPUs.
pub fn parse_nano_cpus(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid CPU count `{s}`: use a decimal number of CPUs, e.g. 0.5");
    let t = s.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
    {
        return Err(bad());
    }
    let w: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let f: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    w.checked_mul(1_000_000_000)
        .and_then(|x| x.checked_add(f))
        .ok_or_else(bad)
}

pub fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" | "" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => Err(format!(
            "unsupported protocol `{other}`: shoal publishes tcp and udp"
        )),
    }
}

fn parse_port(s: &str, whole: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "invalid port `{s}` in `{whole}`: ports are 1-65535"
        )),
    }
}

/// `N` or `N-M` as an inclusive range.
fn parse_range(s: &str, whole: &str) -> Result<(u16, u16), String> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse_port(a, whole)?, parse_port(b, whole)?);
            if b < a {
                return Err(format!(
                    "invalid port range `{s}` in `{whole}`: the end is before the start"
                ));
            }
            Ok((a, b))
        }
        None => {
            let p = parse_port(s, whole)?;
            Ok((p, p))
        }
    }
}

/// The short port syntax: `[[HOST_IP:][PUBLISHED]:]TARGET[/PROTOCOL]`, with ranges.
pub fn parse_port_short(s: &str) -> Result<Vec<PortSpec>, String> {
    let (body, proto) = match s.rsplit_once('/') {
        Some((b, p)) => (b, parse_protocol(p)?),
        None => (s, Protocol::Tcp),
    };
    // An IPv6 host address is written in brackets: `[::1]:8080:80`.
    let (host_ip, rest) = if let Some(after) = body.strip_prefix('[') {
        let (ip, rest) = after
            .split_once(']')
            .ok_or_else(|| format!("invalid port `{s}`: unclosed `[`"))?;
        let rest = rest
            .strip_prefix(':')
            .ok_or_else(|| format!("invalid port `{s}`: expected `:` after the host address"))?;
        (Some(ip.to_string()), rest)
    } else {
        (None, body)
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, published, target) = match (host_ip, parts.as_slice()) {
        (None, [t]) => (None, None, *t),
        (None, [p, t]) => (None, Some(*p), *t),
        (None, [ip, p, t]) => (Some(ip.to_string()), Some(*p), *t),
        (Some(ip), [p, t]) => (Some(ip), Some(*p), *t),
        _ => {
            return Err(format!(
                "invalid port `{s}`: expected [[HOST_IP:]PUBLISHED:]TARGET[/PROTOCOL]"
            ))
        }
    };
    let published = published.filter(|p| !p.is_empty());
    let host_ip = host_ip.filter(|ip| !ip.is_empty());
    let (t0, t1) = parse_range(target, s)?;
    let targets = (t1 - t0) as usize + 1;
    let pubs = match published {
        Some(p) => {
            let (p0, p1) = parse_range(p, s)?;
            let n = (p1 - p0) as usize + 1;
            if n != targets {
                return Err(format!(
                    "invalid port `{s}`: the published range has {n} ports and the target range {targets}; give ranges of the same length"
                ));
            }
            Some(p0)
        }
        None => None,
    };
    Ok((0..targets)
        .map(|i| PortSpec {
            target: t0 + i as u16,
            published: pubs.map(|p0| p0 + i as u16),
            protocol: proto,
            host_ip: host_ip.clone(),
            mode: PortMode::Ingress,
        })
        .collect())
}

/// The short volume syntax, split: `(source, target, options)`.
pub fn split_volume_short(s: &str) -> Result<(Option<&str>, &str, Vec<&str>), String> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        [t] if !t.is_empty() => Ok((None, t, Vec::new())),
        [src, t] if !src.is_empty() && !t.is_empty() => Ok((Some(src), t, Vec::new())),
        [src, t, opts] if !src.is_empty() && !t.is_empty() => {
            Ok((Some(src), t, opts.split(',').collect()))
        }
        _ => Err(format!(
            "invalid volume `{s}`: expected [SOURCE:]TARGET[:MODE]"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("1.5h"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("1h2m3s4ms"), Ok(3_723_004));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("ten seconds").is_err());
        assert!(parse_duration_ms("5d").is_err());
        assert_eq!(parse_duration_secs("800ms"), Ok(0.8));
        assert_eq!(parse_duration_secs("1.5s"), Ok(1.5));
        assert_eq!(parse_duration_secs("250us"), Ok(0.00025));
        assert!(parse_duration_secs("800").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512M"), Ok(536_870_912));
        assert_eq!(parse_bytes("1g"), Ok(1_073_741_824));
        assert_eq!(parse_bytes("50MiB"), Ok(52_428_800));
        assert_eq!(parse_bytes("1.5GB"), Ok(1_610_612_736));
        assert_eq!(parse_bytes("2048"), Ok(2048));
        assert_eq!(parse_bytes("64 kb"), Ok(65_536));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("12x").is_err());
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_nano_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_nano_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_nano_cpus(".25"), Ok(250_000_000));
        assert_eq!(parse_nano_cpus("0.000000001"), Ok(1));
        assert!(parse_nano_cpus("half").is_err());
    }

    fn port(
        target: u16,
        published: Option<u16>,
        protocol: Protocol,
        host_ip: Option<&str>,
    ) -> PortSpec {
        PortSpec {
            target,
            published,
            protocol,
            host_ip: host_ip.map(str::to_string),
            mode: PortMode::Ingress,
        }
    }

    #[test]
    fn short_ports() {
        assert_eq!(
            parse_port_short("8080:80"),
            Ok(vec![port(80, Some(8080), Protocol::Tcp, None)])
        );
        assert_eq!(
            parse_port_short("127.0.0.1:8080:80/udp"),
            Ok(vec![port(80, Some(8080), Protocol::Udp, Some("127.0.0.1"))])
        );
        assert_eq!(
            parse_port_short("80"),
            Ok(vec![port(80, None, Protocol::Tcp, None)])
        );
        assert_eq!(
            parse_port_short("8000-8001:9000-9001"),
            Ok(vec![
                port(9000, Some(8000), Protocol::Tcp, None),
                port(9001, Some(8001), Protocol::Tcp, None)
            ])
        );
        assert_eq!(
            parse_port_short("[::1]:53:53/udp"),
            Ok(vec![port(53, Some(53), Protocol::Udp, Some("::1"))])
        );
        assert_eq!(
            parse_port_short("127.0.0.1::80"),
            Ok(vec![port(80, None, Protocol::Tcp, Some("127.0.0.1"))])
        );
        assert!(parse_port_short("70000:80").is_err());
        assert!(parse_port_short("8000-8002:80").is_err());
        assert!(parse_port_short("80/sctp").is_err());
        assert!(parse_port_short("a:b").is_err());
    }

    #[test]
    fn short_volumes() {
        assert_eq!(split_volume_short("/data"), Ok((None, "/data", vec![])));
        assert_eq!(
            split_volume_short("db:/var/lib"),
            Ok((Some("db"), "/var/lib", vec![]))
        );
        assert_eq!(
            split_volume_short("./x:/y:ro,z"),
            Ok((Some("./x"), "/y", vec!["ro", "z"]))
        );
        assert!(split_volume_short("a:b:c:d").is_err());
    }
}
