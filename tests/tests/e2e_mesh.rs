//! End to end on three test hosts (`scripts/hosts.sh`): the cluster network (issue 8).
//! One harness, scenarios in sequence:
//!
//! 1. `web` (on n1) reaches `db` (forced elsewhere) by name across nodes;
//! 2. a published port answers on all three nodes, also one with no replica; a replica
//!    that turns unhealthy stops receiving traffic;
//! 3. two stacks with a same-named service resolve their own, and cannot reach each
//!    other's replicas;
//! 4. Compose networks limit who sees whom: `web` (front and back) reaches `db` (back)
//!    by name across nodes, `proxy` (front) can neither resolve nor reach `db`;
//! 5. two stacks sharing an external network reach each other's service by name, a
//!    third stack does not;
//! 6. under continuous HTTP load through the mesh, a rolling update completes with no
//!    failed request, and both versions answer;
//! 7. (it takes a node) after db's node is power-cut and db rescheduled, the same
//!    web container reaches it again by the same name;
//! 8. (last: it stops an agent) an agent stopped with SIGTERM removes the routes and
//!    iptables chains it installed on its node.
//!
//! Needs root, iproute2, iptables, nsenter, dockerd and the test image.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_tests::hosts::Hosts;
use shoal_tests::*;

const WAIT: Duration = Duration::from_secs(60);
const ALL: [&str; 3] = ["n1", "n2", "n3"];

/// An httpd on `port` answering `NAME VERSION HOSTNAME`, healthy while /tmp/healthy
/// exists.
fn http_service(name: &str, port: u16, version: &str, extra: &str) -> String {
    format!(
        r#"  {name}:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "touch /tmp/healthy && echo {name} {version} $$(hostname) > /tmp/index.html && exec httpd -f -p {port} -h /tmp"]
    stop_grace_period: 2s
    healthcheck:
      test: ["CMD", "sh", "-c", "test -f /tmp/healthy && wget -q -O /dev/null http://127.0.0.1:{port}/"]
      interval: 500ms
      timeout: 2s
      retries: 2
{extra}"#
    )
}

/// Like [`http_service`], plus `/cgi-bin/v` answering the same after 0.2 s (so requests
/// are in flight when a replica stops), and an init so that httpd dies on SIGTERM at
/// once, as a real server would: a replica stopped before its connections drained
/// fails requests.
fn slow_http_service(name: &str, port: u16, version: &str, extra: &str) -> String {
    format!(
        r#"  {name}:
    image: {TEST_IMAGE}
    command:
      - sh
      - -c
      - |
        mkdir -p /www/cgi-bin
        touch /tmp/healthy
        echo {name} {version} $$(hostname) > /www/index.html
        cat > /www/cgi-bin/v <<'EOS'
        #!/bin/sh
        sleep 0.2
        echo "Content-Type: text/plain"
        echo
        cat /www/index.html
        EOS
        chmod +x /www/cgi-bin/v
        exec httpd -f -p {port} -h /www
    init: true
    stop_grace_period: 2s
    healthcheck:
      test: ["CMD", "sh", "-c", "test -f /tmp/healthy && wget -q -O /dev/null http://127.0.0.1:{port}/"]
      interval: 500ms
      timeout: 2s
      retries: 2
{extra}"#
    )
}

fn deploy(hosts: &Hosts, dir: &Path, stack: &str, services: &[String]) {
    deploy_with(hosts, dir, stack, services, "");
}

/// [`deploy`] with top-level sections after `services:` (e.g. `networks:`).
fn deploy_with(hosts: &Hosts, dir: &Path, stack: &str, services: &[String], top: &str) {
    let file = dir.join(format!("{stack}.yaml"));
    let yaml = format!("name: {stack}\nservices:\n{}{top}", services.concat());
    std::fs::write(&file, yaml).expect("write compose file");
    let out = hosts.shoal(&["deploy", "-c", file.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "deploy {stack}: {}", text(&out));
}

/// (node, state) of the running-desired tasks of `stack/service`.
fn placed(hosts: &Hosts, stack: &str, service: &str) -> Vec<(String, String)> {
    hosts
        .ps(stack)
        .iter()
        .filter(|t| t["desired"] == "running" && t["service"] == service)
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
            (s("node"), s("state"))
        })
        .collect()
}

/// The one running container of `stack/service` on `node`.
fn container(hosts: &Hosts, node: &str, stack: &str, service: &str) -> String {
    let out = hosts.docker(
        node,
        &[
            "ps",
            "-q",
            "--filter",
            &format!("label=io.shoal.stack={stack}"),
            "--filter",
            &format!("label=io.shoal.service={service}"),
        ],
    );
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(
        ids.len(),
        1,
        "one {stack}/{service} container on {node}: {out}"
    );
    ids[0].to_string()
}

/// `docker exec` on a node's engine; stdout on success.
fn exec_in(hosts: &Hosts, node: &str, container: &str, cmd: &[&str]) -> Option<String> {
    let out = Command::new("bash")
        .arg(workspace().join("scripts/hosts.sh"))
        .args(["docker", node, "exec", container])
        .args(cmd)
        .env("SHOAL_HOSTS_ID", hosts.id().to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run hosts.sh");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// An HTTP GET from inside a container (busybox wget crashes on `-T`: timeout(1) bounds it).
fn get_from(hosts: &Hosts, node: &str, container: &str, url: &str) -> Option<String> {
    exec_in(
        hosts,
        node,
        container,
        &["timeout", "3", "wget", "-q", "-O", "-", url],
    )
}

fn node_ip(hosts: &Hosts, node: &str) -> String {
    let i: u32 = node.trim_start_matches('n').parse().expect("node name");
    format!("10.77.{}.{}", hosts.id(), 10 + i)
}

fn app(web_version: &str, api_version: &str) -> Vec<String> {
    vec![
        http_service(
            "web",
            8000,
            web_version,
            "    ports: [\"8080:8000\"]\n    deploy:\n      placement:\n        constraints: [\"node.hostname==n1\"]\n",
        ),
        http_service(
            "db",
            5432,
            "v1",
            "    networks:\n      default:\n        aliases: [\"database\"]\n    deploy:\n      placement:\n        constraints: [\"node.hostname!=n1\"]\n",
        ),
        slow_http_service(
            "api",
            8000,
            api_version,
            "    ports: [\"8081:8000\"]\n    deploy:\n      replicas: 2\n      placement:\n        max_replicas_per_node: 1\n        constraints: [\"node.hostname!=n1\"]\n",
        ),
    ]
}

#[test]
fn three_hosts_find_each_other_by_name_and_answer_published_ports_everywhere() {
    ensure_test_image();
    let hosts = Hosts::up(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();

    deploy(&hosts, dir.path(), "app", &app("v1", "v1"));
    let web = container(&hosts, "n1", "app", "web");
    let (db_node, _) = placed(&hosts, "app", "db").pop().expect("db placed");
    assert_ne!(db_node, "n1", "db runs away from web");

    // 1. By name (and by alias), across nodes.
    let answer = eventually(WAIT, "web reaches db by name", || {
        get_from(&hosts, "n1", &web, "http://db:5432/")
    });
    assert!(answer.starts_with("db v1 "), "db answered: {answer}");
    let alias = get_from(&hosts, "n1", &web, "http://database:5432/");
    assert_eq!(
        alias.as_deref(),
        Some(answer.as_str()),
        "the alias names db too"
    );
    eprintln!("names across nodes: {:?}", started.elapsed());

    published_ports_answer_on_every_node(&hosts);
    eprintln!("mesh and health: {:?}", started.elapsed());
    stacks_are_isolated(&hosts, dir.path(), &web);
    eprintln!("isolation: {:?}", started.elapsed());
    networks_limit_who_sees_whom(&hosts, dir.path());
    eprintln!("networks: {:?}", started.elapsed());
    external_networks_are_shared(&hosts, dir.path());
    eprintln!("external networks: {:?}", started.elapsed());
    rolling_update_under_load(&hosts, dir.path());
    eprintln!("rolling update under load: {:?}", started.elapsed());

    // 7. db's node loses power; db comes back elsewhere; the same web container finds it.
    hosts.cut(&db_node);
    let moved = eventually(WAIT, "db healthy on another node", || {
        placed(&hosts, "app", "db")
            .into_iter()
            .find(|(n, s)| n != &db_node && s == "healthy")
    });
    let again = eventually(WAIT, "web reaches the moved db by name", || {
        get_from(&hosts, "n1", &web, "http://db:5432/").filter(|a| a != &answer)
    });
    assert!(again.starts_with("db v1 "), "the new db answered: {again}");
    assert_eq!(
        container(&hosts, "n1", "app", "web"),
        web,
        "web was not restarted"
    );
    eprintln!(
        "db moved to {moved:?} after a power cut: {:?}",
        started.elapsed()
    );

    // 8. n1's agent stops gracefully: its routes and chains go with it.
    agent_stop_cleans_its_host(&hosts, "n1");
    eprintln!("graceful agent stop: {:?}", started.elapsed());
}

/// Scenario 8: `node`'s mesh routes (`proto 208`) and the `SHOAL-MESH`/`SHOAL-NAT`
/// chains are there while its agent runs and gone once it stopped on SIGTERM.
fn agent_stop_cleans_its_host(hosts: &Hosts, node: &str) {
    let routes = || {
        let out = hosts.exec(node, &["ip", "-4", "route", "show", "proto", "208"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let chains = || {
        let mut all = String::new();
        for table in ["filter", "nat"] {
            let out = hosts.exec(node, &["iptables", "-w", "-t", table, "-S"]);
            all += &String::from_utf8_lossy(&out.stdout);
        }
        all.lines()
            .filter(|l| l.contains("SHOAL-"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        !routes().is_empty(),
        "{node} has mesh routes while its agent runs"
    );
    assert!(
        !chains().is_empty(),
        "{node} has shoal's chains while its agent runs"
    );
    let pid_file = format!("/tmp/shoal-hosts/{}/{node}/agent.pid", hosts.id());
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("read {pid_file}: {e}"))
        .trim()
        .to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success(), "SIGTERM {node}'s agent ({pid})");
    eventually(Duration::from_secs(15), "the agent exits", || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    assert_eq!(routes(), "", "{node}'s mesh routes are removed");
    assert_eq!(
        chains(),
        Vec::<String>::new(),
        "{node}'s chains and jumps are removed"
    );
}

/// Scenario 2: web's port 8080 (one replica, on n1) answers on every node's address; of api's two
/// replicas, the one made unhealthy gets no request through any node.
fn published_ports_answer_on_every_node(hosts: &Hosts) {
    for node in ALL {
        let addr = format!("{}:8080", node_ip(hosts, node));
        let body = eventually(WAIT, &format!("8080 answers on {node}"), || {
            http_get_at(&addr, "/")
        });
        assert!(body.starts_with("web v1 "), "{addr} answered {body}");
    }
    let api = eventually(WAIT, "two healthy api replicas", || {
        let p = placed(hosts, "app", "api");
        (p.len() == 2 && p.iter().all(|(_, s)| s == "healthy")).then_some(p)
    });
    let (sick_node, _) = &api[0];
    let sick = container(hosts, sick_node, "app", "api");
    let sick_name = exec_in(hosts, sick_node, &sick, &["hostname"]).expect("hostname");
    // Both answer before.
    let seen = |n: usize| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for i in 0..n {
            let addr = format!("{}:8081", node_ip(hosts, ALL[i % 3]));
            if let Some(b) = http_get_at(&addr, "/") {
                seen.insert(b.split_whitespace().nth(2).unwrap_or("").to_string());
            }
        }
        seen
    };
    eventually(WAIT, "both api replicas answer through the mesh", || {
        (seen(12).len() == 2).then_some(())
    });
    exec_in(hosts, sick_node, &sick, &["rm", "/tmp/healthy"]).expect("make api unhealthy");
    eventually(WAIT, "the replica shows unhealthy", || {
        placed(hosts, "app", "api")
            .iter()
            .any(|(n, s)| n == sick_node && s == "unhealthy")
            .then_some(())
    });
    // Give the mesh's update a bounded moment, then it must stay away.
    eventually(WAIT, "the unhealthy replica leaves the mesh", || {
        (!seen(6).contains(&sick_name)).then_some(())
    });
    let after = seen(30);
    assert!(
        !after.contains(&sick_name) && after.len() == 1,
        "30 requests over the three nodes reached {after:?}; {sick_name} is unhealthy"
    );
    exec_in(hosts, sick_node, &sick, &["touch", "/tmp/healthy"]).expect("heal api");
}

/// Scenario 3: a second stack with its own `db` and a client: each resolves its own db, and a
/// replica of one stack cannot connect to the other's db on another node.
fn stacks_are_isolated(hosts: &Hosts, dir: &Path, web: &str) {
    deploy(
        hosts,
        dir,
        "other",
        &[
            http_service(
                "db",
                5432,
                "other",
                "    deploy:\n      placement:\n        constraints: [\"node.hostname==n3\"]\n",
            ),
            http_service(
                "client",
                8000,
                "other",
                "    deploy:\n      placement:\n        constraints: [\"node.hostname==n2\"]\n",
            ),
        ],
    );
    let client = container(hosts, "n2", "other", "client");
    let theirs = eventually(WAIT, "other/client reaches its db", || {
        get_from(hosts, "n2", &client, "http://db:5432/")
    });
    assert!(
        theirs.starts_with("db other "),
        "other's db answered {theirs}"
    );
    let ours = get_from(hosts, "n1", web, "http://db:5432/").expect("app's db answers");
    assert!(
        ours.starts_with("db v1 "),
        "app's web still gets app's db: {ours}"
    );
    let other_db = container(hosts, "n3", "other", "db");
    let ip = exec_in(hosts, "n3", &other_db, &["hostname", "-i"]).expect("db's address");
    assert!(ip.starts_with("10.208."), "a cluster address: {ip}");
    assert_eq!(
        get_from(hosts, "n1", web, &format!("http://{ip}:5432/")),
        None,
        "app's web must not reach other's db at {ip}"
    );
    let out = hosts.shoal(&["rm", "other"]);
    assert!(out.status.success(), "rm other: {}", text(&out));
}

/// What busybox wget says fetching `url` from a container: the body, or its error
/// (`bad address` when the name does not resolve).
fn wget_says(hosts: &Hosts, node: &str, container: &str, url: &str) -> String {
    exec_in(
        hosts,
        node,
        container,
        &[
            "sh",
            "-c",
            &format!("timeout 3 wget -q -O - {url} 2>&1; true"),
        ],
    )
    .unwrap_or_default()
}

fn on_node(node: &str, networks: &str) -> String {
    format!(
        "    networks: {networks}\n    deploy:\n      placement:\n        constraints: [\"node.hostname=={node}\"]\n"
    )
}

/// Scenario 4: stack `tiers` with networks `front` and `back`: web (both, on n1), db
/// (back, on n2, alias `store` there), proxy (front, on n3).
fn networks_limit_who_sees_whom(hosts: &Hosts, dir: &Path) {
    deploy_with(
        hosts,
        dir,
        "tiers",
        &[
            http_service("web", 8000, "tiers", &on_node("n1", "[front, back]")),
            http_service(
                "db",
                5432,
                "tiers",
                &on_node("n2", "{back: {aliases: [store]}}"),
            ),
            http_service("proxy", 8000, "tiers", &on_node("n3", "[front]")),
        ],
        "networks:\n  front:\n  back:\n",
    );
    let web = container(hosts, "n1", "tiers", "web");
    let proxy = container(hosts, "n3", "tiers", "proxy");
    let db = container(hosts, "n2", "tiers", "db");
    let answer = eventually(WAIT, "tiers/web reaches db by name", || {
        get_from(hosts, "n1", &web, "http://db:5432/")
    });
    assert!(answer.starts_with("db tiers "), "db answered {answer}");
    let alias = get_from(hosts, "n1", &web, "http://store:5432/");
    assert_eq!(
        alias.as_deref(),
        Some(answer.as_str()),
        "back's alias names db"
    );
    let front = eventually(WAIT, "proxy reaches web by name on front", || {
        get_from(hosts, "n3", &proxy, "http://web:8000/")
    });
    assert!(front.starts_with("web tiers "), "web answered {front}");
    for name in ["db", "store"] {
        let said = wget_says(hosts, "n3", &proxy, &format!("http://{name}:5432/"));
        assert!(
            said.contains("bad address"),
            "proxy (front only) must not resolve {name}: {said}"
        );
    }
    let db_ip = exec_in(hosts, "n2", &db, &["hostname", "-i"]).expect("db's address");
    assert!(db_ip.starts_with("10.208."), "a cluster address: {db_ip}");
    assert_eq!(
        get_from(hosts, "n3", &proxy, &format!("http://{db_ip}:5432/")),
        None,
        "proxy (front only) must not reach db at {db_ip}"
    );
    let out = hosts.shoal(&["rm", "tiers"]);
    assert!(out.status.success(), "rm tiers: {}", text(&out));
}

/// Scenario 5: stacks `ea` (alpha, on n1, also on its default network) and `eb` (beta,
/// on n2) declare the external network `x-e2e-shared`; `ec` (gamma, on n3) does not.
fn external_networks_are_shared(hosts: &Hosts, dir: &Path) {
    // Named to sort after `shoal-ea`: alpha's default route (Docker takes the first
    // network in lexical order) is then not the shared network, so alpha reaches beta
    // from its address on `ea`'s default network.
    let shared = "networks:\n  shared:\n    external: true\n    name: x-e2e-shared\n";
    deploy_with(
        hosts,
        dir,
        "ea",
        &[http_service(
            "alpha",
            8000,
            "ea",
            &on_node("n1", "[default, shared]"),
        )],
        shared,
    );
    deploy_with(
        hosts,
        dir,
        "eb",
        &[http_service("beta", 8000, "eb", &on_node("n2", "[shared]"))],
        shared,
    );
    deploy(
        hosts,
        dir,
        "ec",
        &[http_service(
            "gamma",
            8000,
            "ec",
            &on_node("n3", "[default]"),
        )],
    );
    let alpha = container(hosts, "n1", "ea", "alpha");
    let beta = container(hosts, "n2", "eb", "beta");
    let gamma = container(hosts, "n3", "ec", "gamma");
    let b = eventually(WAIT, "ea/alpha reaches eb/beta by name", || {
        get_from(hosts, "n1", &alpha, "http://beta:8000/")
    });
    assert!(b.starts_with("beta eb "), "beta answered {b}");
    eprintln!(
        "alpha's routes (printed, not asserted): {:?}",
        exec_in(hosts, "n1", &alpha, &["ip", "route"])
    );
    let a = eventually(WAIT, "eb/beta reaches ea/alpha by name", || {
        get_from(hosts, "n2", &beta, "http://alpha:8000/")
    });
    assert!(a.starts_with("alpha ea "), "alpha answered {a}");
    let said = wget_says(hosts, "n3", &gamma, "http://beta:8000/");
    assert!(
        said.contains("bad address"),
        "ec must not resolve beta: {said}"
    );
    let beta_ip = exec_in(hosts, "n2", &beta, &["hostname", "-i"]).expect("beta's address");
    assert_eq!(
        get_from(hosts, "n3", &gamma, &format!("http://{beta_ip}:8000/")),
        None,
        "ec's gamma must not reach beta at {beta_ip}"
    );
    for stack in ["ea", "eb", "ec"] {
        let out = hosts.shoal(&["rm", stack]);
        assert!(out.status.success(), "rm {stack}: {}", text(&out));
    }
}

/// Scenario 6: four clients (two on a 0.2 s path) send requests through all three
/// nodes' 8081 while api rolls from v1 to v2 (stop-first, one at a time); none may
/// fail, both versions must answer.
fn rolling_update_under_load(hosts: &Hosts, dir: &Path) {
    eventually(WAIT, "two healthy api replicas", || {
        let p = placed(hosts, "app", "api");
        (p.len() == 2 && p.iter().all(|(_, s)| s == "healthy")).then_some(())
    });
    const MAX_REQUESTS: usize = 20_000;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let versions = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let addrs: Vec<String> = ALL
        .iter()
        .map(|n| format!("{}:8081", node_ip(hosts, n)))
        .collect();
    let clients: Vec<_> = (0..4)
        .map(|k| {
            let (stop, sent, failed, versions, addrs) = (
                stop.clone(),
                sent.clone(),
                failed.clone(),
                versions.clone(),
                addrs.clone(),
            );
            std::thread::spawn(move || {
                // Two clients ask the slow path: a request is nearly always in flight.
                let path = if k % 2 == 0 { "/cgi-bin/v" } else { "/" };
                let mut i = k;
                while !stop.load(Ordering::Relaxed)
                    && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
                {
                    let addr = &addrs[i % addrs.len()];
                    i += 1;
                    match http_get_at(addr, path) {
                        Some(b) => {
                            let v = b.split_whitespace().nth(1).unwrap_or("").to_string();
                            versions.lock().unwrap_or_else(|p| p.into_inner()).insert(v);
                        }
                        None => failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("{addr} at {:?}", Instant::now())),
                    }
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    deploy(hosts, dir, "app", &app("v1", "v2"));
    // `shoal deploy` returns once the rollout completed (every replica healthy).
    let done = placed(hosts, "app", "api");
    assert!(
        done.len() == 2 && done.iter().all(|(_, s)| s == "healthy"),
        "api after its rollout: {done:?}"
    );
    // Keep the load on until the new version has answered through the mesh (bounded),
    // then stop the clients.
    eventually(
        Duration::from_secs(20),
        "v2 answering through the mesh",
        || {
            versions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains("v2")
                .then_some(())
        },
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    let sent = sent.load(Ordering::Relaxed).min(MAX_REQUESTS);
    let failed = failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let versions = versions.lock().unwrap_or_else(|p| p.into_inner()).clone();
    eprintln!(
        "rollout under load: {sent} requests in {:?}, {} failed, versions {versions:?}, api {done:?}",
        t0.elapsed(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failed requests during the rollout: {failed:?}"
    );
    assert_eq!(
        versions,
        ["v1".to_string(), "v2".to_string()].into_iter().collect(),
        "both versions answered"
    );
}
