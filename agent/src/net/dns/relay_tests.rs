//! The relay of non-cluster names over real UDP sockets on 127.0.0.x: a container
//! with `dns:` servers is relayed to them (the next one when the first refuses),
//! any other asker to the host's resolver.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::{answer, parse_query, serve, Names, TYPE_A};
use crate::net::upstream::Upstreams;

fn query(id: u16, name: &str) -> Vec<u8> {
    super::test_query(id, name, TYPE_A)
}

/// A DNS server on `bind` answering every A question with `ip`; counts the questions.
async fn fake_upstream(
    bind: &str,
    ip: Ipv4Addr,
    stop: CancellationToken,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind(bind).await.expect("bind the fake upstream");
    let addr = socket.local_addr().expect("its address");
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let (len, from) = tokio::select! {
                _ = stop.cancelled() => return,
                r = socket.recv_from(&mut buf) => match r { Ok(r) => r, Err(_) => return },
            };
            if let Some(q) = parse_query(&buf[..len]) {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = socket.send_to(&answer(&buf[..len], &q, &[ip]), from).await;
            }
        }
    });
    (addr, asked)
}

/// The A record of the answer `from` gets to `name` from the server at `server`;
/// `None` when no answer comes in time.
async fn ask(from: &str, server: SocketAddr, id: u16, name: &str) -> Option<Ipv4Addr> {
    let client = UdpSocket::bind(from).await.expect("bind the asker");
    client
        .send_to(&query(id, name), server)
        .await
        .expect("send");
    let mut buf = [0u8; 512];
    let len = tokio::time::timeout(Duration::from_secs(4), client.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    let ancount = u16::from_be_bytes([buf[6], buf[7]]);
    (ancount > 0 && len >= 4).then(|| {
        let o: [u8; 4] = buf[len - 4..len].try_into().expect("4 bytes");
        Ipv4Addr::from(o)
    })
}

#[tokio::test]
async fn a_containers_other_names_go_to_its_own_upstreams_not_the_hosts() {
    let stop = CancellationToken::new();
    let own = Ipv4Addr::new(192, 0, 2, 77);
    let (upstream, asked) = fake_upstream("127.0.0.2:0", own, stop.clone()).await;
    // A first server that refuses (nothing listens there any more): the next is asked.
    let dead = {
        let s = UdpSocket::bind("127.0.0.4:0").await.expect("bind");
        s.local_addr().expect("address")
    };
    // The host's resolver: 127.0.0.3:53 answers something else when the test may bind
    // it (root); otherwise nothing answers there. Either way not the container's.
    let host_dir = tempfile::tempdir().expect("temp dir");
    let resolv = host_dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.3\n").expect("write resolv.conf");
    let host_ip = Ipv4Addr::new(192, 0, 2, 66);
    let host_served = UdpSocket::bind("127.0.0.3:53").await.is_ok();
    if host_served {
        fake_upstream("127.0.0.3:53", host_ip, stop.clone()).await;
    }

    let container: IpAddr = "127.0.0.5".parse().expect("ip");
    let upstreams = Arc::new(Upstreams::with_resolv_conf(&resolv));
    upstreams.set([(container, vec![dead, upstream])].into());
    let cluster_ip = Ipv4Addr::new(10, 208, 0, 2);
    let names = Arc::new(RwLock::new(Names {
        names: [(("shop".to_string(), "db".to_string()), vec![cluster_ip])].into(),
        ..Names::default()
    }));
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind the server");
    let server = socket.local_addr().expect("its address");
    tokio::spawn(serve(
        socket,
        "shop".into(),
        names,
        upstreams.clone(),
        stop.clone(),
    ));

    assert_eq!(
        ask("127.0.0.5:0", server, 1, "example.test").await,
        Some(own)
    );
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "asked the container's upstream once"
    );
    // Cluster names keep resolving for it, without asking upstream.
    assert_eq!(ask("127.0.0.5:0", server, 2, "db").await, Some(cluster_ip));
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    // Another container asks the host's resolver, never the first one's.
    let other = ask("127.0.0.6:0", server, 3, "example.test").await;
    assert_ne!(other, Some(own));
    if host_served {
        assert_eq!(other, Some(host_ip));
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    // Its container gone, its address asks the host's resolver too.
    upstreams.set(Default::default());
    assert_ne!(
        ask("127.0.0.5:0", server, 4, "example.test").await,
        Some(own)
    );
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    stop.cancel();
}
