//! Deploy throughput and memory of an in-process cluster on fake agents, printed (not
//! asserted): `cargo bench -p shoal-tests --bench scale_deploy`.
//!
//! 1. RSS at rest: this process's resident memory before starting anything, then with one
//!    controller and 10 fake agents running 1,000 tasks, after they settled. Controller
//!    and agents share the process, so the figure is their sum (the agents' fake engines
//!    included); the agent binary has no fake runtime, so separate processes are not
//!    measured here.
//! 2. `deploy` of 10,000 replicas onto 100 fake agents until `ps` reports every one
//!    running: wall time and replicas per second.
//! 3. Node loss: with 2 replicas per node on 3 and on 1,000 fake agents, one agent
//!    stops abruptly; the time until `ps` shows every replica running again, none on it
//!    (the node grace, 5 s here, included).
//! 4. 100,000 replicas onto 1,000 fake agents: the rate, the process's peak RSS and CPU
//!    time over the deploy, then its RSS and CPU at rest for 10 s with every agent
//!    heartbeating. Controller and agents share the process: its RSS is their sum, an
//!    upper bound on the controller's; the controller runs on threads of its own, whose
//!    CPU is printed apart (the fake agents list their containers every 5 s here, not
//!    500 ms). Then the controller is stopped and started again on its data dir: how
//!    long until it answers with every replica running, and until every agent is back.
//! 5. The same deploy onto 1,000 nodes that are only agent sessions (no supervisor, no
//!    fake engine): the process's RSS is then the controller's plus their connections,
//!    with no task and with 100,000 at rest, and the controller's CPU at rest.
//!    Parts 4 and 5 only with `SHOAL_BENCH_BIG=1` (minutes; part 5 runs first;
//!    `=only` runs these two alone, `=alone` part 5 alone)
//!    (`SHOAL_BENCH_LOSS=0` skips part 3).
//!
//! `cargo test --benches` runs it small (100 replicas, node loss on 3 and 10 agents, no
//! part 4) so the bench stays compiled and working without costing the test suite much.

use std::time::{Duration, Instant};

use shoal_proto::spec::{ServiceSpec, StackSpec};
use shoal_tests::cluster::{Cluster, Options};
use shoal_tests::rss_kib;

fn stack(name: &str, replicas: u64) -> StackSpec {
    let web = ServiceSpec {
        name: "web".into(),
        image: "shoal-test/busybox:latest".into(),
        replicas,
        ..Default::default()
    };
    StackSpec {
        name: name.into(),
        services: [("web".to_string(), web)].into_iter().collect(),
        volumes: Default::default(),
        secrets: Vec::new(),
        configs: Vec::new(),
        networks: Default::default(),
    }
}

fn opts() -> Options {
    Options {
        heartbeat_interval: Duration::from_millis(500),
        node_grace: Duration::from_secs(10),
        ..Options::default()
    }
}

/// Deploys `replicas` onto `agents` fake nodes; returns the seconds until all run, or
/// None if they did not within `bound`.
async fn deploy_until_running(
    cl: &Cluster,
    name: &str,
    replicas: u64,
    bound: Duration,
) -> Option<f64> {
    let client = cl.client();
    let start = Instant::now();
    client.deploy(&stack(name, replicas)).await.expect("deploy");
    loop {
        // Past 20,000 rows `ps` outgrows a gRPC message (4 MiB): the service's count then.
        if replicas > 20_000 {
            let rows = client.services().await;
            if let Err(e) = &rows {
                if std::env::var_os("SHOAL_BENCH_TRACE").is_some() {
                    eprintln!("{:6.2} s: services: {e}", start.elapsed().as_secs_f64());
                }
            }
            if let Ok(rows) = rows {
                let running: u64 = rows
                    .iter()
                    .filter(|r| r.stack == name)
                    .map(|r| r.running)
                    .sum();
                if std::env::var_os("SHOAL_BENCH_TRACE").is_some() {
                    eprintln!("{:6.2} s: {running} running", start.elapsed().as_secs_f64());
                }
                if running == replicas {
                    return Some(start.elapsed().as_secs_f64());
                }
            }
        } else if let Ok(rows) = client.ps(name).await {
            let running = rows
                .iter()
                .filter(|r| r.desired == "running" && r.state == "running")
                .count() as u64;
            if std::env::var_os("SHOAL_BENCH_TRACE").is_some() {
                let assigned = rows.iter().filter(|r| !r.node.is_empty()).count();
                eprintln!(
                    "{:6.2} s: {} tasks, {assigned} assigned, {running} running",
                    start.elapsed().as_secs_f64(),
                    rows.len()
                );
            }
            if running == replicas {
                return Some(start.elapsed().as_secs_f64());
            }
        }
        if start.elapsed() > bound {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn agent_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("bench-n{i:04}")).collect()
}

/// This process's CPU time (user + system), in seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 14th field.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}

/// The CPU time (user + system) of this process's threads named `name`, in seconds.
fn threads_cpu_secs(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut ticks = 0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        ticks += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    }
    ticks as f64 / 100.0
}

/// The controllers' CPU time, in seconds (they run on threads of their own here).
fn controller_cpu_secs() -> f64 {
    threads_cpu_secs(shoal_tests::cluster::CONTROLLER_THREADS)
}

/// This process's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn start(agents: usize, opts: Options) -> Cluster {
    let names = agent_names(agents);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    Cluster::start_with(1, &refs, opts).await
}

/// Seconds from one of `agents` nodes stopping abruptly until its replicas (2 per node)
/// run elsewhere.
async fn node_loss(agents: usize, bound: Duration) -> Option<f64> {
    // The same grace at every size; 1,000 agents in this process on 2 cores are slower
    // to be heard than 3.
    let opts = Options {
        node_grace: Duration::from_secs(5),
        heartbeat_interval: Duration::from_millis(500),
        ..Options::default()
    };
    let mut cl = start(agents, opts).await;
    let replicas = 2 * agents as u64;
    deploy_until_running(&cl, "loss", replicas, bound).await?;
    let victim = agent_names(agents)[agents / 2].clone();
    let client = cl.client();
    let start = Instant::now();
    cl.kill_agent(&victim).await;
    let took = loop {
        if let Ok(rows) = client.ps("loss").await {
            let running = rows
                .iter()
                .filter(|r| r.desired == "running" && r.state == "running" && r.node != victim)
                .count() as u64;
            if std::env::var_os("SHOAL_BENCH_TRACE").is_some() {
                let on_victim = rows.iter().filter(|r| r.node == victim).count();
                eprintln!(
                    "{:6.2} s: {} tasks, {on_victim} on {victim}, {running} running elsewhere",
                    start.elapsed().as_secs_f64(),
                    rows.len()
                );
            }
            if running == replicas {
                break Some(start.elapsed().as_secs_f64());
            }
        }
        if start.elapsed() > bound {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cl.shutdown();
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (rss_tasks, deploy_replicas, deploy_agents) = if quick {
        (100, 100, 10)
    } else {
        (1_000, 10_000, 100)
    };
    let bound = Duration::from_secs(600);

    // `only`: parts 4 and 5; `alone`: part 5.
    let only_big = std::env::var("SHOAL_BENCH_BIG").is_ok_and(|v| v == "only" || v == "alone");
    let base = rss_kib();
    if !only_big {
        let names = agent_names(10);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let cl = Cluster::start_with(1, &refs, opts()).await;
        let took = deploy_until_running(&cl, "rss", rss_tasks, bound).await;
        // At rest: let the post-deploy status traffic drain.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let at_rest = rss_kib();
        println!(
            "rss: process {base} KiB before; {at_rest} KiB with 1 controller + 10 fake agents \
             running {rss_tasks} tasks at rest (+{} KiB); deploy took {}",
            at_rest.saturating_sub(base),
            took.map_or("(not all running)".to_string(), |t| format!("{t:.2} s"))
        );
        cl.shutdown();
    }

    if !only_big {
        let t = Instant::now();
        let cl = start(deploy_agents, opts()).await;
        let startup = t.elapsed().as_secs_f64();
        match deploy_until_running(&cl, "big", deploy_replicas, bound).await {
            Some(secs) => println!(
            "deploy: {deploy_replicas} replicas onto {deploy_agents} fake agents all running in \
             {secs:.2} s ({:.0} replicas/s; cluster start {startup:.1} s); rss {} KiB",
            deploy_replicas as f64 / secs,
            rss_kib()
        ),
            None => println!(
            "deploy: {deploy_replicas} replicas onto {deploy_agents} fake agents NOT all running \
             within {bound:?}"
        ),
        }
        cl.shutdown();

        let (small, large) = if quick { (3, 10) } else { (3, 1_000) };
        let mut losses = Vec::new();
        let loss = std::env::var("SHOAL_BENCH_LOSS").map_or(true, |v| v != "0");
        for agents in [small, large].into_iter().filter(|_| loss) {
            let took = node_loss(agents, bound).await;
            losses.push(took.map_or("NOT within the bound".to_string(), |t| format!("{t:.2} s")));
        }
        if loss {
            println!(
            "node loss: a node's 2 replicas running elsewhere in {} with {small} nodes, {} with \
         {large} nodes (grace 5 s)",
            losses[0], losses[1]
        );
        }
    }

    let big = !quick && (only_big || std::env::var("SHOAL_BENCH_BIG").is_ok_and(|v| v == "1"));
    if std::env::var("SHOAL_BENCH_BIG").is_ok_and(|v| v == "alone") {
        controller_alone(100_000, 1_000).await;
        return;
    }
    if big {
        let (replicas, agents) = (100_000, 1_000);
        // Part 5 first: the thousand fake agents and engines of part 4 take a while to
        // wind down after it, and a cluster started meanwhile in this process did not
        // elect its controller within 30 s.
        controller_alone(replicas, agents).await;
        // 1,000 fake agents listing 100 fake containers every 500 ms would take most of
        // this process's CPU; a real agent does that on its own machine.
        let cl = start(
            agents,
            Options {
                agent_observe: Duration::from_secs(5),
                controller_runtime: true,
                ..opts()
            },
        )
        .await;
        let (cpu0, ctl0) = (cpu_secs(), controller_cpu_secs());
        match deploy_until_running(&cl, "huge", replicas, Duration::from_secs(600)).await {
            Some(secs) => println!(
                "deploy: {replicas} replicas onto {agents} fake agents all running in {secs:.1} s \
                 ({:.0} replicas/s); process peak RSS {} MiB, CPU {:.0} s over the deploy \
                 ({:.0}% of one core), of which the controller {:.0} s ({:.0}%)",
                replicas as f64 / secs,
                peak_rss_kib() / 1024,
                cpu_secs() - cpu0,
                100.0 * (cpu_secs() - cpu0) / secs,
                controller_cpu_secs() - ctl0,
                100.0 * (controller_cpu_secs() - ctl0) / secs
            ),
            None => {
                println!("deploy: {replicas} replicas onto {agents} fake agents NOT all running")
            }
        }
        // At rest: the agents heartbeat (every 500 ms here), nothing changes.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (cpu0, ctl0, t0) = (cpu_secs(), controller_cpu_secs(), Instant::now());
        tokio::time::sleep(Duration::from_secs(10)).await;
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "at rest: {replicas} tasks, {agents} agents heartbeating: the controller's CPU \
             {:.1}% of one core; process RSS {} MiB and CPU {:.1}% of one core (controller and \
             fake agents together)",
            100.0 * (controller_cpu_secs() - ctl0) / secs,
            rss_kib() / 1024,
            100.0 * (cpu_secs() - cpu0) / secs
        );
        restart(cl, replicas, agents).await;
    }
}

/// Part 5: the same deploy onto `agents` nodes that are only sessions (hello,
/// heartbeats, every assigned task reported running at once, nothing held), so that the
/// process's memory is the controller's plus their connections: its RSS with no task
/// and with `replicas` at rest, and its CPU at rest.
async fn controller_alone(replicas: u64, agents: usize) {
    let cl = Cluster::start_with(
        1,
        &[],
        Options {
            controller_runtime: true,
            // 100,000 statuses arrive within a second here: with the tests' 3 s some
            // proposals time out and end their sessions (a real agent reconnects; these
            // do not). The production default.
            propose_timeout: shoal_controller::api::PROPOSE_TIMEOUT,
            ..opts()
        },
    )
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    for (i, name) in agent_names(agents).into_iter().enumerate() {
        tokio::spawn(session_only(
            cl.ca.clone(),
            cl.addr(0),
            name,
            i,
            stop.clone(),
        ));
    }
    let client = cl.client();
    let t = Instant::now();
    loop {
        let nodes = client.nodes().await;
        if std::env::var_os("SHOAL_BENCH_TRACE").is_some() {
            let n = nodes.as_ref().map(|n| n.len());
            eprintln!("{:6.2} s: nodes: {n:?}", t.elapsed().as_secs_f64());
        }
        let ready = nodes.map_or(0, |n| n.iter().filter(|n| n.status == "ready").count());
        if ready == agents || t.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let empty = rss_kib();
    let took = deploy_until_running(&cl, "huge", replicas, Duration::from_secs(600)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (ctl0, t0) = (controller_cpu_secs(), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu = 100.0 * (controller_cpu_secs() - ctl0) / t0.elapsed().as_secs_f64();
    let full = rss_kib();
    // What glibc keeps of the memory freed after the burst counts in RSS; returned to
    // the system, what remains is closer to what is in use.
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe { libc::malloc_trim(0) };
    let trimmed = rss_kib();
    println!(
        "controller alone: {agents} session-only agents: process RSS {} MiB with no task, {} \
         MiB with {replicas} running at rest, {} MiB once the allocator returned what it kept \
         free (+{} MiB for the tasks); the controller's CPU at rest {cpu:.1}% of one core; \
         deploy {}",
        empty / 1024,
        full / 1024,
        trimmed / 1024,
        trimmed.saturating_sub(empty) / 1024,
        took.map_or("NOT all running".to_string(), |s| format!("{s:.1} s"))
    );
    cl.shutdown();
}

/// A node that is only an agent session: says hello (it applies deltas), heartbeats
/// at the agent's default interval (250 ms) and reports each task it is told to run as running, with an address.
async fn session_only(
    ca: std::sync::Arc<shoal_controller::pki::ClusterCa>,
    addr: String,
    name: String,
    index: usize,
    stop: tokio_util::sync::CancellationToken,
) {
    use shoal_proto::pb::{self, agent_message::Msg};
    let tls = shoal_tests::cluster::mint(
        &ca,
        shoal_tls::Identity::new(shoal_tls::Role::Agent, &name),
        std::time::SystemTime::now(),
        Duration::from_secs(3600),
    );
    let Ok(channel) = shoal_tests::cluster::channel(&tls, &addr).await else {
        return;
    };
    let (up, rx) = tokio::sync::mpsc::channel(256);
    let hello = pb::Hello {
        name: name.clone(),
        address: format!("192.0.{}.{}", 2 + index / 250, 1 + index % 250),
        cpus: 64.0,
        memory_bytes: 256 << 30,
        deltas: true,
        member_deltas: true,
        ..Default::default()
    };
    let send = |msg| pb::AgentMessage { msg: Some(msg) };
    if up.send(send(Msg::Hello(hello))).await.is_err() {
        return;
    }
    let mut client = pb::agent_session_client::AgentSessionClient::new(channel);
    let Ok(down) = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut down = down.into_inner();
    let mut beat = tokio::time::interval(shoal_agent::HEARTBEAT_INTERVAL);
    let (mut seq, mut next_ip) = (0u64, 2u32);
    let mut reported = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = beat.tick() => {
                seq += 1;
                let hb = pb::Heartbeat { seq, ..Default::default() };
                if up.send(send(Msg::Heartbeat(hb))).await.is_err() {
                    return;
                }
            }
            msg = down.message() => {
                let Ok(Some(msg)) = msg else { return };
                let Some(pb::controller_message::Msg::Assignments(set)) = msg.msg else {
                    continue;
                };
                for task in set.tasks {
                    if task.desired != "running" || !reported.insert(task.task_id.clone()) {
                        continue;
                    }
                    let ip = format!("10.{}.{}.{}", index / 256, index % 256, next_ip);
                    next_ip += 1;
                    let status = pb::TaskStatus {
                        task_id: task.task_id,
                        state: "running".into(),
                        container_id: format!("c{index}-{next_ip}"),
                        ip: ip.clone(),
                        ips: vec![pb::NetworkAddress {
                            network: shoal_proto::network::local_key(&task.stack, "default"),
                            ip,
                        }],
                        ..Default::default()
                    };
                    if up.send(send(Msg::Status(status))).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Stops the one controller of `cl` and starts it again on its data dir; prints how long
/// it takes to answer with every replica running, and for every agent to be back.
async fn restart(mut cl: Cluster, replicas: u64, agents: usize) {
    let state_bytes = dir_bytes(&cl.data_dir(0));
    let t = Instant::now();
    cl.kill(0).await;
    let stopped = t.elapsed().as_secs_f64();
    let t = Instant::now();
    cl.restart(0).await;
    let client = cl.client();
    let bound = Duration::from_secs(300);
    let mut answered = None;
    let back = loop {
        if answered.is_none() {
            if let Ok(rows) = client.services().await {
                if rows.iter().map(|r| r.running).sum::<u64>() == replicas {
                    answered = Some(t.elapsed().as_secs_f64());
                }
            }
        }
        if answered.is_some() {
            if let Ok(nodes) = client.nodes().await {
                if nodes.iter().filter(|n| n.status == "ready").count() == agents {
                    break Some(t.elapsed().as_secs_f64());
                }
            }
        }
        if t.elapsed() > bound {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let secs = |v: Option<f64>| v.map_or(format!("NOT within {bound:?}"), |s| format!("{s:.1} s"));
    println!(
        "restart: the controller with {replicas} tasks (data dir {} MiB) stopped in {stopped:.1} \
         s; answered with every replica running {} after starting again, all {agents} agents \
         back {}",
        state_bytes >> 20,
        secs(answered),
        secs(back)
    );
    cl.shutdown();
}

/// The size of the files under `dir`, in bytes.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}
