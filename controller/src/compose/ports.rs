//! `ports:` of a service, short (`"127.0.0.1:8080:80/udp"`, ranges) and long syntax.

use shoal_proto::spec::{PortMode, PortSpec};

use super::diag::Sink;
use super::units::{parse_port_short, parse_protocol};
use super::value::{opt_text, text};
use super::yaml::Node;

pub(crate) fn ports(n: &Node, sink: &mut Sink, path: &str) -> Vec<PortSpec> {
    let items = super::value::list(n, sink, path);
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        if item.as_map().is_none() {
            if let Some(t) = text(item, sink, &ipath) {
                match parse_port_short(&t) {
                    Ok(ps) => out.extend(ps),
                    Err(e) => sink.error(item.pos, &ipath, e),
                }
            }
            continue;
        }
        let port_of = |sink: &mut Sink, k: &str| -> Option<u16> {
            let v = item.get(k)?;
            let t = text(v, sink, &format!("{ipath}.{k}"))?;
            match t.parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    sink.error(v.pos, &format!("{ipath}.{k}"), format!("invalid port `{t}`: ports are 1-65535 (ranges only in the short syntax)"));
                    None
                }
            }
        };
        let Some(target) = port_of(sink, "target") else {
            if item.get("target").is_none() {
                sink.error(item.pos, &ipath, "missing required key `target`");
            }
            continue;
        };
        let mut p = PortSpec {
            target,
            published: port_of(sink, "published"),
            ..Default::default()
        };
        if let Some(proto) = item.get("protocol") {
            if let Some(t) = text(proto, sink, &format!("{ipath}.protocol")) {
                match parse_protocol(&t) {
                    Ok(pr) => p.protocol = pr,
                    Err(e) => sink.error(proto.pos, &format!("{ipath}.protocol"), e),
                }
            }
        }
        p.host_ip = item
            .get("host_ip")
            .and_then(|h| opt_text(h, sink, &format!("{ipath}.host_ip")));
        if let Some(m) = item.get("mode") {
            match text(m, sink, &format!("{ipath}.mode")).as_deref() {
                Some("host") => p.mode = PortMode::Host,
                Some("ingress") => p.mode = PortMode::Ingress,
                Some(other) => sink.error(
                    m.pos,
                    &format!("{ipath}.mode"),
                    format!("unknown port mode `{other}`: use host or ingress"),
                ),
                None => {}
            }
        }
        out.push(p);
    }
    out
}
