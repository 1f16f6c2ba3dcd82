//! The wire protocol's version, carried by every gRPC request in its `user-agent`
//! (`shoal/VERSION protocol/P min/M`): `P` is the protocol the sender speaks, `M` the
//! oldest one it still works with. Controllers refuse a peer they cannot work with
//! (a clear error instead of a misread message); a request without it (grpcurl, an
//! older shoal) is taken as protocol 1.
//!
//! Bump [`PROTOCOL`] when a message changes meaning; raise [`MIN_PROTOCOL`] only when
//! this version can no longer serve an older peer. One version apart must always work
//! (a rolling upgrade: controllers one at a time, then agents).

/// The protocol this shoal speaks.
pub const PROTOCOL: u32 = 3;
/// The oldest protocol this shoal works with.
pub const MIN_PROTOCOL: u32 = 1;

/// The response header in which a controller answering a Raft RPC gives its
/// protocol, so the leader knows what every follower can apply.
pub const HEADER: &str = "shoal-protocol";

/// What a request says of its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub protocol: u32,
    pub min: u32,
}

/// This shoal's `user-agent`.
pub fn user_agent() -> String {
    format!(
        "shoal/{} protocol/{PROTOCOL} min/{MIN_PROTOCOL}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The peer a `user-agent` names; `None` when it names none (not a shoal).
pub fn parse(user_agent: &str) -> Option<Peer> {
    let mut words = user_agent.split_whitespace();
    words.next()?.strip_prefix("shoal/")?;
    let mut protocol = None;
    let mut min = None;
    for w in words {
        if let Some(p) = w.strip_prefix("protocol/") {
            protocol = p.parse().ok();
        } else if let Some(m) = w.strip_prefix("min/") {
            min = m.parse().ok();
        }
    }
    let protocol = protocol?;
    Some(Peer {
        protocol,
        min: min.unwrap_or(protocol),
    })
}

/// Why this shoal (speaking `ours`, working with `our_min` and up) cannot work with a
/// peer whose `user-agent` is `user_agent`, if it cannot.
pub fn incompatible(user_agent: &str, ours: Peer) -> Option<String> {
    let peer = parse(user_agent)?;
    let version = user_agent
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_start_matches("shoal/");
    if peer.protocol < ours.min {
        return Some(format!(
            "shoal {version} speaks wire protocol {}, older than this shoal works with ({}..{}): upgrade it (controllers one at a time, then agents)",
            peer.protocol, ours.min, ours.protocol
        ));
    }
    if peer.min > ours.protocol {
        return Some(format!(
            "shoal {version} speaks wire protocol {} and works only with {} and newer; this shoal speaks {}: upgrade this controller first (controllers one at a time, then agents)",
            peer.protocol, peer.min, ours.protocol
        ));
    }
    None
}

/// This shoal as a [`Peer`].
pub fn ours() -> Peer {
    Peer {
        protocol: PROTOCOL,
        min: MIN_PROTOCOL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_read() {
        assert_eq!(parse(&user_agent()), Some(ours()));
        assert_eq!(
            parse("shoal/0.3.0 protocol/3 min/2 tonic/0.12.3"),
            Some(Peer {
                protocol: 3,
                min: 2
            })
        );
        assert_eq!(parse("grpcurl/1.8 grpc-go/1.5"), None);
        assert_eq!(parse("shoal/0.0.9"), None);
    }

    #[test]
    fn one_version_apart_works_and_further_is_refused_saying_why() {
        let ours = Peer {
            protocol: 2,
            min: 1,
        };
        assert_eq!(incompatible("shoal/0.3.0 protocol/3 min/2", ours), None);
        assert_eq!(incompatible("shoal/0.1.0 protocol/1 min/1", ours), None);
        assert_eq!(incompatible("curl/8", ours), None);
        let newer = incompatible("shoal/0.4.0 protocol/4 min/3", ours).unwrap();
        assert!(newer.contains("shoal 0.4.0 speaks wire protocol 4 and works only with 3 and newer; this shoal speaks 2"), "{newer}");
        let older = incompatible("shoal/0.0.1 protocol/0 min/0", ours).unwrap();
        assert!(
            older.contains("older than this shoal works with (1..2)"),
            "{older}"
        );
    }
}
