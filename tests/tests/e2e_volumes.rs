//! Stateful services on three test hosts, with a real PostgreSQL (Debian's
//! `postgresql-15`, made by `scripts/build-postgres-image.sh` in `scripts/test.sh`) whose
//! data lives in a named volume. One harness is shared by the scenarios, in order:
//!
//! 1. rows written; the database's node power-cut: the database is not started empty
//!    elsewhere and says why; the node revived: the rows are there;
//! 2. `volume move` to another node: the rows are there after; the move's target cut
//!    mid-copy leaves the source intact (the database runs on it again) and the move
//!    succeeds when retried;
//! 3. `volume backup` while it runs, `volume rm`, `volume restore` on another node: the
//!    rows are there;
//! 4. a replicated volume (`x-shoal-volume: {replicas: 2, every: 3s}`): rows written,
//!    one period waited, power cut: the database starts on the standby's node with the
//!    rows; the freeze time and the data-loss window are printed; the old node's copy
//!    is set aside when it returns.
//!
//! Needs root, iproute2, iptables, nsenter, dockerd, the test image and the PostgreSQL
//! image (`shoal-test/postgres:15`); without one, the test fails saying which.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::hosts::Hosts;
use shoal_tests::*;

const PG_IMAGE: &str = "shoal-test/postgres:15";
const WAIT: Duration = Duration::from_secs(90);

/// A PostgreSQL whose data directory is in the named volume `pgdata`, mounted where the
/// image has `/var/lib/postgresql` (so a new volume starts owned by postgres).
fn stack_yaml(stack: &str, volume_ext: &str) -> String {
    format!(
        r#"name: {stack}
services:
  db:
    image: {PG_IMAGE}
    user: postgres
    command:
      - sh
      - -c
      - |
        test -s /var/lib/postgresql/data/PG_VERSION ||
          /usr/lib/postgresql/15/bin/initdb -D /var/lib/postgresql/data -U postgres --auth=trust >/dev/null
        exec /usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/data -c listen_addresses=127.0.0.1 -k /tmp
    stop_grace_period: 10s
    stop_signal: SIGINT
    volumes:
      - pgdata:/var/lib/postgresql
    healthcheck:
      test: ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "postgres"]
      interval: 1s
      timeout: 3s
      retries: 30
volumes:
  pgdata:
{volume_ext}"#
    )
}

fn deploy(hosts: &Hosts, dir: &Path, stack: &str, volume_ext: &str) {
    let file = dir.join(format!("{stack}.yaml"));
    std::fs::write(&file, stack_yaml(stack, volume_ext)).expect("write compose file");
    let out = hosts.shoal(&["deploy", "-c", file.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "deploy {stack}: {}", text(&out));
}

/// The running, healthy `db` task of `stack`: (node, container).
fn healthy_db(hosts: &Hosts, stack: &str) -> (String, String) {
    eventually(WAIT, &format!("{stack}/db healthy"), || {
        hosts
            .ps(stack)
            .iter()
            .find(|t| t["desired"] == "running" && t["state"] == "healthy")
            .map(|t| {
                (
                    t["node"].as_str().unwrap_or("").to_string(),
                    t["container"].as_str().unwrap_or("").to_string(),
                )
            })
    })
}

fn psql(hosts: &Hosts, node: &str, container: &str, sql: &str) -> String {
    // A standby refresh pauses the container for a moment, and `docker exec` is refused
    // while it is paused (nothing runs then): asked again until it runs.
    let sock = hosts.docker_sock(node);
    eventually(WAIT, &format!("psql on {node}"), || {
        let out = std::process::Command::new("docker")
            .args([
                "-H",
                &format!("unix://{sock}"),
                "exec",
                "-u",
                "postgres",
                container,
            ])
            .args(["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", sql])
            .output()
            .expect("run docker exec");
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is paused"), "psql on {node}: {err}");
        std::thread::sleep(std::time::Duration::from_millis(100));
        None
    })
}

fn rows(hosts: &Hosts, stack: &str) -> u64 {
    let (node, c) = healthy_db(hosts, stack);
    let n = psql(hosts, &node, &c, "SELECT count(*) FROM items");
    n.parse()
        .unwrap_or_else(|_| panic!("count(*) on {node} said {n:?}"))
}

fn insert(hosts: &Hosts, stack: &str, from: u32, to: u32) {
    let (node, c) = healthy_db(hosts, stack);
    psql(
        hosts,
        &node,
        &c,
        &format!(
            "CREATE TABLE IF NOT EXISTS items (id int primary key, note text); \
             INSERT INTO items SELECT g, 'row ' || g FROM generate_series({from}, {to}) g;"
        ),
    );
}

fn volumes(hosts: &Hosts, stack: &str) -> Vec<Value> {
    eventually(Duration::from_secs(20), "shoal volume ls to answer", || {
        hosts.json(&["volume", "ls", stack])?.as_array().cloned()
    })
}

/// (node, state) of every copy of `stack/pgdata`, sorted.
fn copies(hosts: &Hosts, stack: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = volumes(hosts, stack)
        .iter()
        .filter(|r| r["name"] == "pgdata")
        .map(|r| {
            (
                r["node"].as_str().unwrap_or("").to_string(),
                r["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn db_containers_elsewhere(hosts: &Hosts, stack: &str, except: &str) -> Vec<String> {
    hosts
        .names()
        .iter()
        .filter(|n| n.as_str() != except)
        .flat_map(|n| {
            hosts
                .containers(n, stack, true)
                .into_iter()
                .map(move |s| format!("{n}:{s}"))
        })
        .collect()
}

fn other(hosts: &Hosts, not: &[&str]) -> String {
    hosts
        .names()
        .into_iter()
        .find(|n| !not.contains(&n.as_str()))
        .expect("a third node")
}

/// The PostgreSQL image in every node's engine (they have no registry to pull from).
fn load_pg_image(hosts: &Hosts) {
    let tar = std::env::temp_dir().join(format!("shoal-pg-{}.tar", std::process::id()));
    docker(&["save", PG_IMAGE, "-o", tar.to_str().expect("utf-8")]);
    let handles: Vec<_> = hosts
        .names()
        .into_iter()
        .map(|n| {
            let sock = hosts.docker_sock(&n);
            let tar = tar.clone();
            std::thread::spawn(move || {
                let out = std::process::Command::new("docker")
                    .args(["-H", &format!("unix://{sock}"), "load", "-q", "-i"])
                    .arg(&tar)
                    .output()
                    .expect("docker load");
                assert!(
                    out.status.success(),
                    "load {PG_IMAGE} into {n}: {}",
                    text(&out)
                );
            })
        })
        .collect();
    for h in handles {
        h.join().expect("image load");
    }
    let _ = std::fs::remove_file(tar);
}

#[test]
fn a_database_keeps_its_data_through_node_loss_moves_backups_and_failover() {
    ensure_test_image();
    let images = docker(&["images", "-q", PG_IMAGE]);
    assert!(
        !images.trim().is_empty(),
        "{PG_IMAGE} is missing: scripts/build-postgres-image.sh makes it (scripts/test.sh runs it)"
    );
    let hosts = Hosts::up(3);
    load_pg_image(&hosts);
    let dir = tempfile::tempdir().expect("tempdir");

    // 1. Power cut of the database's node: it waits for its data, then finds it again.
    deploy(&hosts, dir.path(), "realapp", "");
    insert(&hosts, "realapp", 1, 20);
    assert_eq!(rows(&hosts, "realapp"), 20);
    let (home, _) = healthy_db(&hosts, "realapp");
    eventually(WAIT, "the copy reported by its agent", || {
        (copies(&hosts, "realapp") == vec![(home.clone(), "live".to_string())]).then_some(())
    });
    hosts.cut(&home);
    let why = eventually(WAIT, "db pending, saying why", || {
        hosts
            .ps("realapp")
            .iter()
            .find(|t| t["desired"] == "running" && t["state"] == "pending")
            .map(|t| t["error"].as_str().unwrap_or("").to_string())
            .filter(|e| e.contains("volume realapp_pgdata is on"))
    });
    assert!(
        why.starts_with(&format!(
            "volume realapp_pgdata is on {home}, which is down: bring {home} back"
        )),
        "{why}"
    );
    // It stays so: no empty database anywhere else, no second copy.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(db_containers_elsewhere(&hosts, "realapp", &home).is_empty());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        copies(&hosts, "realapp"),
        vec![(home.clone(), "live".to_string())]
    );
    hosts.revive(&home);
    assert_eq!(healthy_db(&hosts, "realapp").0, home);
    assert_eq!(
        rows(&hosts, "realapp"),
        20,
        "the rows are there after the revive"
    );

    // 2. Move it; then a move whose target dies mid-copy, retried.
    let to = other(&hosts, &[&home]);
    let out = hosts.shoal(&["volume", "move", "realapp/pgdata", "--to", &to]);
    assert!(out.status.success(), "volume move: {}", text(&out));
    println!("volume move: {}", text(&out).trim());
    assert_eq!(healthy_db(&hosts, "realapp").0, to);
    assert_eq!(
        rows(&hosts, "realapp"),
        20,
        "the rows moved with the volume"
    );
    assert_eq!(copies(&hosts, "realapp"), {
        let mut v = vec![
            (home.clone(), "set-aside".to_string()),
            (to.clone(), "live".to_string()),
        ];
        v.sort();
        v
    });
    // Enough data that the copy takes a while, then the target is cut while it copies.
    let (node, c) = healthy_db(&hosts, "realapp");
    psql(
        &hosts,
        &node,
        &c,
        "CREATE TABLE bulk AS SELECT g, md5(g::text) || repeat('x', 900) AS pad \
         FROM generate_series(1, 250000) g;",
    );
    let target = other(&hosts, &[&home, &to]);
    let started = hosts.shoal(&[
        "volume",
        "move",
        "realapp/pgdata",
        "--to",
        &target,
        "--detach",
    ]);
    assert!(
        started.status.success(),
        "volume move --detach: {}",
        text(&started)
    );
    eventually(WAIT, "the copy under way, bytes flowing", || {
        volumes(&hosts, "realapp").iter().find_map(|r| {
            let note = r["note"].as_str().unwrap_or("");
            let bytes: u64 = note
                .rsplit(": ")
                .next()
                .and_then(|t| t.strip_suffix(" bytes so far"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (r["node"] == target.as_str() && r["state"] == "incoming" && bytes > 0).then_some(())
        })
    });
    hosts.cut(&target);
    // The move fails; the source copy stays live and the database runs on it again.
    assert_eq!(healthy_db(&hosts, "realapp").0, to);
    assert_eq!(rows(&hosts, "realapp"), 20, "the source is intact");
    hosts.revive(&target);
    eventually(WAIT, "the partial copy removed", || {
        (!copies(&hosts, "realapp").iter().any(|(n, _)| *n == target)).then_some(())
    });
    let out = hosts.shoal(&["volume", "move", "realapp/pgdata", "--to", &target]);
    assert!(out.status.success(), "volume move, retried: {}", text(&out));
    println!("volume move, retried: {}", text(&out).trim());
    assert_eq!(healthy_db(&hosts, "realapp").0, target);
    assert_eq!(rows(&hosts, "realapp"), 20);

    // 3. Backup while it runs, remove, restore elsewhere.
    let backup = dir.path().join("pgdata.tar");
    let out = hosts.shoal(&[
        "volume",
        "backup",
        "realapp/pgdata",
        backup.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "volume backup: {}", text(&out));
    assert!(std::fs::metadata(&backup).expect("backup file").len() > 1 << 20);
    let out = hosts.shoal(&["scale", "realapp/db=0"]);
    assert!(out.status.success(), "scale to 0: {}", text(&out));
    eventually(WAIT, "db stopped", || {
        hosts
            .ps("realapp")
            .iter()
            .all(|t| {
                ["shutdown", "complete", "failed", "orphaned"]
                    .contains(&t["state"].as_str().unwrap_or(""))
            })
            .then_some(())
    });
    for (n, _) in copies(&hosts, "realapp") {
        let out = hosts.shoal(&["volume", "rm", "realapp/pgdata", "--node", &n]);
        assert!(out.status.success(), "volume rm --node {n}: {}", text(&out));
    }
    eventually(WAIT, "every copy removed", || {
        copies(&hosts, "realapp").is_empty().then_some(())
    });
    let out = hosts.shoal(&[
        "volume",
        "restore",
        "realapp/pgdata",
        backup.to_str().expect("utf-8"),
        "--node",
        &home,
    ]);
    assert!(out.status.success(), "volume restore: {}", text(&out));
    let out = hosts.shoal(&["scale", "realapp/db=1"]);
    assert!(out.status.success(), "scale to 1: {}", text(&out));
    assert_eq!(
        healthy_db(&hosts, "realapp").0,
        home,
        "it runs where the copy was restored"
    );
    assert_eq!(
        rows(&hosts, "realapp"),
        20,
        "the rows came back from the backup"
    );

    // 4. A replicated volume fails over to its standby.
    deploy(
        &hosts,
        dir.path(),
        "repl",
        "    x-shoal-volume: {replicas: 2, every: 3s}\n",
    );
    insert(&hosts, "repl", 1, 20);
    let written = now_ms();
    let (primary, _) = healthy_db(&hosts, "repl");
    let standby = eventually(
        WAIT,
        "a standby refreshed after the rows were written",
        || {
            volumes(&hosts, "repl").iter().find_map(|r| {
                let synced = r["synced_ms"].as_u64().unwrap_or(0);
                (r["state"] == "standby" && synced > written)
                    .then(|| r["node"].as_str().unwrap_or("").to_string())
            })
        },
    );
    let frozen = volumes(&hosts, "repl")
        .iter()
        .find(|r| r["state"] == "standby")
        .and_then(|r| r["frozen_ms"].as_u64())
        .unwrap_or(0);
    let synced = volumes(&hosts, "repl")
        .iter()
        .find(|r| r["state"] == "standby")
        .and_then(|r| r["synced_ms"].as_u64())
        .unwrap_or(0);
    let cut_at = hosts.cut(&primary);
    let now_on = eventually(WAIT, "repl/db healthy off the cut node", || {
        hosts
            .ps("repl")
            .iter()
            .find(|t| {
                t["desired"] == "running"
                    && t["state"] == "healthy"
                    && t["node"] != primary.as_str()
            })
            .map(|t| t["node"].as_str().unwrap_or("").to_string())
    });
    assert_eq!(now_on, standby, "failed over to the standby");
    assert_eq!(rows(&hosts, "repl"), 20, "the rows up to the last copy");
    println!(
        "replicated volume: replicas paused {frozen} ms for the last copy; data-loss window \
         {} ms (last copy to power cut)",
        cut_at.saturating_sub(synced)
    );
    hosts.revive(&primary);
    eventually(WAIT, "the old copy set aside", || {
        copies(&hosts, "repl")
            .contains(&(primary.clone(), "set-aside".to_string()))
            .then_some(())
    });
    assert_eq!(
        healthy_db(&hosts, "repl").0,
        standby,
        "it stays on the promoted copy"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
