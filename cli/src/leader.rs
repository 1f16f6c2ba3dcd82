//! The leader hint a follower controller attaches to a refused write.
//!
//! A follower answers `FAILED_PRECONDITION` or `UNAVAILABLE` with metadata
//! `x-shoal-leader: host:port`; the client retries there.

use tonic::{Code, Status};

pub use shoal_proto::{LEADER_HINT, NO_LEADER};

/// Whether `status` says no leader is known right now: the request was not acted on.
pub fn no_leader(status: &Status) -> bool {
    status.code() == Code::Unavailable && status.metadata().get(NO_LEADER).is_some()
}

/// The leader's `host:port` if `status` is a follower's redirect, else `None`.
pub fn leader_hint(status: &Status) -> Option<String> {
    if !matches!(status.code(), Code::FailedPrecondition | Code::Unavailable) {
        return None;
    }
    let value = status.metadata().get(LEADER_HINT)?.to_str().ok()?;
    parse_leader(value)
}

/// Accepts `host:port` (host a name, an IPv4 address or a bracketed IPv6 address),
/// optionally prefixed with `http://`; returns `host:port`.
pub fn parse_leader(value: &str) -> Option<String> {
    let value = value.trim();
    let value = value.strip_prefix("http://").unwrap_or(value);
    let (host, port) = value.rsplit_once(':')?;
    let host_ok = !host.is_empty()
        && if let Some(inner) = host.strip_prefix('[') {
            inner
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            host.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        };
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    (host_ok && port_ok).then(|| format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    fn status(code: Code, hint: Option<&str>) -> Status {
        let mut md = MetadataMap::new();
        if let Some(h) = hint {
            md.insert(LEADER_HINT, h.parse().unwrap());
        }
        Status::with_metadata(code, "not the leader", md)
    }

    #[test]
    fn hints_from_follower_answers() {
        assert_eq!(
            leader_hint(&status(Code::FailedPrecondition, Some("10.0.0.2:7370"))),
            Some("10.0.0.2:7370".to_string())
        );
        assert_eq!(
            leader_hint(&status(Code::Unavailable, Some(" ctl-2:7370 "))),
            Some("ctl-2:7370".to_string())
        );
        // Only the two redirecting codes carry a hint.
        assert_eq!(
            leader_hint(&status(Code::InvalidArgument, Some("10.0.0.2:7370"))),
            None
        );
        assert_eq!(leader_hint(&status(Code::FailedPrecondition, None)), None);
        assert_eq!(leader_hint(&status(Code::Unavailable, Some(""))), None);
    }

    #[test]
    fn leader_values() {
        assert_eq!(parse_leader("h:1"), Some("h:1".into()));
        assert_eq!(
            parse_leader("http://10.0.0.2:7370"),
            Some("10.0.0.2:7370".into())
        );
        assert_eq!(parse_leader("[::1]:7370"), Some("[::1]:7370".into()));
        for bad in [
            "",
            "host",
            "host:",
            ":7370",
            "host:0",
            "host:70000",
            "host:+1",
            "a b:1",
            "[::1:7370",
            "[zz]:1",
            "h:1,h:2",
        ] {
            assert_eq!(parse_leader(bad), None, "{bad}");
        }
    }
}
