//! The Compose loader on files written like real stacks (`tests/fixtures/compose/`):
//! anchors and merge keys, `.env` interpolation, several `-c` files, profiles, env_file,
//! and broken files whose errors must name file:line and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shoal_controller::compose::{
    load, render, Disposition, LoadError, LoadOptions, Loaded, Severity,
};
use shoal_proto::spec::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose")
}

fn fixture(rel: &str) -> PathBuf {
    fixtures().join(rel)
}

fn opts(files: &[&str]) -> LoadOptions {
    LoadOptions {
        files: files.iter().map(|f| fixture(f)).collect(),
        env: [("HOME".to_string(), "/home/tester".to_string())].into(),
        ..Default::default()
    }
}

fn ok(o: &LoadOptions) -> Loaded {
    load(o).unwrap_or_else(|e| panic!("should load:\n{e}"))
}

fn err(o: &LoadOptions) -> LoadError {
    match load(o) {
        Ok(l) => panic!("should fail, loaded {:#?}", l.stack),
        Err(e) => e,
    }
}

/// The errors as `FILE-RELATIVE-TO-FIXTURES:LINE:COL: error: KEY: MESSAGE` lines.
fn lines(e: &LoadError) -> Vec<String> {
    let prefix = format!("{}/", fixtures().display());
    e.diagnostics
        .iter()
        .map(|d| d.to_string().replace(&prefix, ""))
        .collect()
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn anchors_merge_keys_and_dotenv_interpolation() {
    let mut o = opts(&["anchors/compose.yaml"]);
    o.env.insert("REGION".into(), "from-process".into());
    let l = ok(&o);
    assert_eq!(
        l.stack.name, "anchors",
        "the directory name, no name: given"
    );
    let api = &l.stack.services["api"];
    assert_eq!(api.image, "registry.example.com/api:1.4.2");
    assert_eq!(
        api.command,
        Some(vec![
            "./api".into(),
            "--port".into(),
            "8080".into(),
            "--name".into(),
            "${HOSTNAME}".into()
        ])
    );
    assert_eq!(
        api.environment,
        env(&[("LOG_LEVEL", "debug"), ("REGION", "from-process")]),
        "<<: [*env, *deploy] brings both; the process env wins over .env"
    );
    assert_eq!(api.replicas, 3, "replicas interpolated from .env");
    assert_eq!(api.resources.limits.nano_cpus, Some(500_000_000));
    assert_eq!(api.resources.limits.memory_bytes, Some(256 * 1024 * 1024));
    assert!(l.keys.iter().any(|k| k.service == "api"
        && k.key == "x-team"
        && k.disposition == Disposition::Ignored("extension field".into())));

    let worker = &l.stack.services["worker"];
    assert_eq!(
        worker.replicas, 1,
        "the service's own deploy replaces the merged one"
    );
    assert_eq!(
        worker.resources.limits.memory_bytes, None,
        "a merge key does not deep-merge"
    );
    assert_eq!(
        worker.environment,
        env(&[("QUEUE", "jobs"), ("NESTED", "deep")])
    );
    assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
}

#[test]
fn a_required_variable_names_itself_its_message_and_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("compose.yaml");
    std::fs::copy(fixture("anchors/compose.yaml"), &f).expect("copy");
    let e = err(&LoadOptions {
        files: vec![f.clone()],
        env: env(&[("REPLICAS", "1")]),
        ..Default::default()
    });
    assert_eq!(
        e.to_string(),
        format!("{}:18:12: error: services.api.image: required variable TAG is not set: set TAG to the release", f.display())
    );
}

#[test]
fn override_files_merge_in_order() {
    let mut o = opts(&["override/compose.yaml", "override/compose.prod.yaml"]);
    o.env.insert("SECRET_FROM_ENV".into(), "s3cret".into());
    let l = ok(&o);
    assert_eq!(l.stack.name, "shop");
    let web = &l.stack.services["web"];
    assert_eq!(web.image, "shop/web:2");
    assert_eq!(
        web.command,
        Some(vec!["serve".into()]),
        "command is replaced, not appended"
    );
    assert_eq!(
        web.environment,
        env(&[
            ("MODE", "prod"),
            ("DEBUG", "1"),
            ("SECRET_FROM_ENV", "s3cret")
        ])
    );
    assert_eq!(web.labels, env(&[("tier", "front"), ("owner", "team-a")]));
    let port = |target, published| PortSpec {
        target,
        published: Some(published),
        ..Default::default()
    };
    assert_eq!(
        web.ports,
        vec![port(80, 8080), port(9229, 9229), port(443, 8443)],
        "8080:80 is not doubled"
    );
    let src = fixture("override/src").display().to_string();
    assert_eq!(
        web.volumes,
        vec![
            MountSpec {
                kind: MountKind::Bind,
                source: Some(src),
                target: "/app/src".into(),
                read_only: false,
                relative: true,
            },
            MountSpec {
                kind: MountKind::Volume,
                source: Some("cache".into()),
                target: "/cache".into(),
                read_only: true,
                relative: false,
            },
            MountSpec {
                kind: MountKind::Volume,
                source: Some("logs".into()),
                target: "/logs".into(),
                read_only: false,
                relative: false,
            },
        ],
        "volumes merge by target; bind sources are absolute"
    );
    assert_eq!(
        web.depends_on,
        [
            ("db".to_string(), Dependency::default()),
            (
                "cache".to_string(),
                Dependency {
                    condition: DependencyCondition::ServiceHealthy,
                    required: true
                }
            ),
        ]
        .into()
    );
    assert_eq!(web.replicas, 4);
    assert_eq!(
        web.healthcheck.as_ref().map(|h| h.test.clone()),
        Some(vec![
            "CMD".into(),
            "curl".into(),
            "-f".into(),
            "http://localhost/".into()
        ])
    );
    let cache = &l.stack.services["cache"];
    assert_eq!(
        cache
            .healthcheck
            .as_ref()
            .map(|h| (h.test.clone(), h.interval_ms)),
        Some((
            vec!["CMD-SHELL".into(), "redis-cli ping".into()],
            Some(5000)
        ))
    );
    assert_eq!(
        l.stack.volumes.keys().collect::<Vec<_>>(),
        vec!["cache", "data", "logs"]
    );
    assert!(l.stack.volumes["logs"].external);
}

#[test]
fn reset_and_override_tags_across_files() {
    let l = ok(&opts(&[
        "override/compose.yaml",
        "override/compose.reset.yaml",
    ]));
    let web = &l.stack.services["web"];
    assert_eq!(web.ports, vec![]);
    assert_eq!(web.environment, env(&[("ONLY", "this")]));
}

#[test]
fn profiles_select_services() {
    let l = ok(&opts(&["profiles/compose.yaml"]));
    assert_eq!(l.stack.services.keys().collect::<Vec<_>>(), vec!["app"]);
    let mut o = opts(&["profiles/compose.yaml"]);
    o.profiles = vec!["init".into()];
    assert_eq!(
        ok(&o).stack.services.keys().collect::<Vec<_>>(),
        vec!["app", "seed"]
    );
    o.profiles = vec!["debug".into(), "tools".into()];
    assert_eq!(
        ok(&o).stack.services.keys().collect::<Vec<_>>(),
        vec!["app", "debug", "seed"]
    );
    let mut o = opts(&["profiles/compose.yaml"]);
    o.env.insert("COMPOSE_PROFILES".into(), "debug".into());
    assert_eq!(
        ok(&o).stack.services.keys().collect::<Vec<_>>(),
        vec!["app", "debug"]
    );
}

#[test]
fn depending_on_a_disabled_service_is_an_error() {
    let e = err(&opts(&["profiles/needs-disabled.yaml"]));
    assert_eq!(
        lines(&e),
        vec!["profiles/needs-disabled.yaml:6:9: error: services.app.depends_on.metrics: service app depends on `metrics`, which is disabled by its profiles; enable one with --profile"]
    );
    let mut o = opts(&["profiles/needs-disabled.yaml"]);
    o.profiles = vec!["monitoring".into()];
    assert_eq!(ok(&o).stack.services.len(), 2);
}

#[test]
fn env_files_then_environment() {
    let mut o = opts(&["envfile/compose.yaml"]);
    o.env.insert("PASSED_THROUGH".into(), "from-shell".into());
    let l = ok(&o);
    assert_eq!(
        l.stack.services["app"].environment,
        env(&[
            ("DB_HOST", "db.internal"),
            ("SHARED", "compose-wins"),
            ("QUOTED", "a b"),
            ("FROM_COMPOSE", "yes"),
            ("PASSED_THROUGH", "from-shell"),
        ]),
        "later env_files win, environment wins over env_file, a bare key with no value is dropped"
    );
    assert!(l
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Warning && d.message.contains("local.env not found")));
}

#[test]
fn a_missing_env_file_is_an_error_naming_it() {
    let e = err(&opts(&["envfile/missing.yaml"]));
    let l = lines(&e);
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(
        l[0].starts_with("envfile/missing.yaml:7:9: error: services.app.env_file[1]: env_file envfile/does-not-exist.env cannot be read"),
        "{}",
        l[0]
    );
}

#[test]
fn the_project_name_follows_compose() {
    assert_eq!(
        ok(&opts(&["Weird.Dir_Name/compose.yaml"])).stack.name,
        "weirddir_name"
    );
    let mut o = opts(&["override/compose.yaml"]);
    o.project_name = Some("explicit".into());
    assert_eq!(ok(&o).stack.name, "explicit");
    o.project_name = Some("Not Valid".into());
    let e = err(&o);
    assert!(
        e.to_string()
            .contains("invalid project name `Not Valid` (--stack)"),
        "{e}"
    );
}

#[test]
fn every_honored_key_lands_in_the_spec() {
    let l = ok(&opts(&["full/compose.yaml"]));
    assert_eq!(l.stack.name, "full");
    let app = &l.stack.services["app"];
    let conf = fixture("full/conf").display().to_string();
    let expected = ServiceSpec {
        name: "app".into(),
        image: "example/app:2.1".into(),
        command: Some(vec!["run".into(), "--fast".into()]),
        entrypoint: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "exec \"$0\" \"$@\"".into(),
        ]),
        environment: BTreeMap::new(),
        working_dir: Some("/srv".into()),
        user: Some("1000:1000".into()),
        hostname: Some("app-host".into()),
        labels: BTreeMap::new(),
        ports: vec![
            PortSpec {
                target: 80,
                published: Some(8080),
                protocol: Protocol::Udp,
                host_ip: Some("127.0.0.1".into()),
                mode: PortMode::Ingress,
            },
            PortSpec {
                target: 9000,
                published: Some(19000),
                protocol: Protocol::Tcp,
                host_ip: None,
                mode: PortMode::Host,
            },
        ],
        volumes: vec![
            MountSpec {
                kind: MountKind::Volume,
                source: Some("data".into()),
                target: "/data".into(),
                read_only: true,
                relative: false,
            },
            MountSpec {
                kind: MountKind::Bind,
                source: Some(conf),
                target: "/etc/app".into(),
                read_only: false,
                relative: true,
            },
            MountSpec {
                kind: MountKind::Bind,
                source: Some("/var/run/docker.sock".into()),
                target: "/var/run/docker.sock".into(),
                read_only: false,
                relative: false,
            },
            MountSpec {
                kind: MountKind::Volume,
                source: None,
                target: "/scratch".into(),
                read_only: false,
                relative: false,
            },
            MountSpec {
                kind: MountKind::Tmpfs,
                source: None,
                target: "/tmp/cache".into(),
                read_only: false,
                relative: false,
            },
        ],
        healthcheck: Some(HealthcheckSpec {
            test: vec!["CMD".into(), "/bin/health".into()],
            interval_ms: Some(90_000),
            timeout_ms: Some(500),
            retries: Some(3),
            ..Default::default()
        }),
        restart: RestartPolicy {
            condition: RestartCondition::OnFailure,
            delay_ms: 5_000,
            max_attempts: Some(3),
            window_ms: Some(120_000),
        },
        stop_grace_period_ms: Some(60_000),
        stop_signal: Some("SIGINT".into()),
        init: Some(true),
        cap_add: vec!["NET_ADMIN".into()],
        cap_drop: vec!["ALL".into()],
        tmpfs: vec!["/run".into()],
        ulimits: [
            (
                "nofile".to_string(),
                Ulimit {
                    soft: 20000,
                    hard: 40000,
                },
            ),
            (
                "nproc".to_string(),
                Ulimit {
                    soft: 65535,
                    hard: 65535,
                },
            ),
        ]
        .into(),
        extra_hosts: vec!["db.local:10.0.0.5".into(), "ip6:::1".into()],
        mode: ServiceMode::Replicated,
        replicas: 2,
        resources: Resources {
            limits: Limits {
                nano_cpus: Some(1_500_000_000),
                memory_bytes: Some(1 << 30),
                pids: Some(100),
            },
            reservations: Limits {
                nano_cpus: Some(250_000_000),
                memory_bytes: Some(50 << 20),
                pids: None,
            },
        },
        depends_on: [(
            "migrate".to_string(),
            Dependency {
                condition: DependencyCondition::ServiceCompletedSuccessfully,
                required: true,
            },
        )]
        .into(),
        placement: Placement {
            constraints: vec![
                Constraint {
                    field: ConstraintField::Hostname,
                    equal: true,
                    value: "gpu-1".into(),
                },
                Constraint {
                    field: ConstraintField::Id,
                    equal: false,
                    value: "n2".into(),
                },
                Constraint {
                    field: ConstraintField::Label("zone".into()),
                    equal: true,
                    value: "eu".into(),
                },
            ],
            spread: vec!["rack".into()],
            max_replicas_per_node: Some(1),
        },
        gpus: vec![GpuRequest {
            capabilities: vec!["gpu".into()],
            min_memory_bytes: Some(40 << 30),
            model: Some("NVIDIA H100*".into()),
            ..Default::default()
        }],
        networks: vec![ServiceNetwork {
            name: "default".into(),
            key: l.stack.name.clone(),
            aliases: vec!["api".into(), "backend".into()],
        }],
        // `update_config: {parallelism: 1}`: the defaults, written out.
        update: UpdateConfig::default(),
        rollback: UpdateConfig {
            parallelism: 0,
            order: UpdateOrder::StartFirst,
            ..UpdateConfig::default()
        },
        disconnect: DisconnectPolicy::default(),
        secrets: Vec::new(),
        configs: Vec::new(),
        // Neither `pull_policy` nor `build:` is written.
        pull_policy: PullPolicy::Missing,
        build: None,
        container: shoal_proto::container::ContainerOptions {
            logging: Some(shoal_proto::container::Logging {
                driver: Some("syslog".into()),
                options: BTreeMap::new(),
            }),
            ..Default::default()
        },
        autoscale: None,
    };
    assert_eq!(app, &expected);

    let migrate = &l.stack.services["migrate"];
    assert_eq!(migrate.mode, ServiceMode::ReplicatedJob);
    assert_eq!(migrate.restart.condition, RestartCondition::None);
    assert_eq!(
        migrate.gpus,
        vec![GpuRequest {
            device_ids: vec!["GPU-1".into(), "GPU-2".into()],
            driver: Some("nvidia".into()),
            capabilities: vec!["gpu".into()],
            ..Default::default()
        }]
    );
    assert_eq!(
        l.stack.volumes["data"],
        VolumeSpec {
            external: false,
            name: Some("full-data".into()),
            driver: Some("local".into()),
            driver_opts: env(&[("type", "none"), ("o", "bind")]),
            labels: env(&[("com.example.tier", "db")]),
            policy: Default::default(),
        }
    );

    let warnings: Vec<String> = l
        .diagnostics
        .iter()
        .map(|d| format!("{}:{}", d.line.unwrap_or(0), d.key))
        .collect();
    assert_eq!(
        warnings,
        vec![
            "1:version",
            "29:services.app.restart",
            "45:services.app.container_name",
        ]
    );
    assert!(l.diagnostics[2]
        .message
        .contains("cannot be unique with more than one replica"));
    let disposition = |svc: &str, key: &str| {
        l.keys
            .iter()
            .find(|k| k.service == svc && k.key == key)
            .map(|k| k.disposition.clone())
    };
    assert_eq!(disposition("app", "ports"), Some(Disposition::Honored));
    assert_eq!(
        disposition("app", "deploy.placement"),
        Some(Disposition::Honored)
    );
    assert_eq!(disposition("app", "logging"), Some(Disposition::Honored));
    assert_eq!(
        l.stack.services["app"].container.logging,
        Some(shoal_proto::container::Logging {
            driver: Some("syslog".into()),
            options: BTreeMap::new(),
        })
    );
    assert_eq!(
        disposition("app", "deploy.update_config"),
        Some(Disposition::Honored)
    );
    assert_eq!(
        disposition("app", "deploy.rollback_config"),
        Some(Disposition::Honored)
    );

    let text = render(&l);
    assert!(text.contains("name: full"), "{text}");
    assert!(text.contains("# service app"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("#   logging") && l.ends_with("honored")),
        "{text}"
    );
}

#[test]
fn update_config_maps_every_field_and_defaults_without_it() {
    let l = ok(&opts(&["update/compose.yaml"]));
    let svc = |name: &str| &l.stack.services[name];
    assert_eq!(
        svc("web").update,
        UpdateConfig {
            parallelism: 2,
            delay_ms: 10_000,
            order: UpdateOrder::StartFirst,
            monitor_ms: 60_000,
            failure_action: FailureAction::Continue,
            max_failure_ratio: 0.25,
        }
    );
    assert_eq!(
        svc("worker").update,
        UpdateConfig {
            parallelism: 1,
            delay_ms: 0,
            order: UpdateOrder::StopFirst,
            monitor_ms: 5_000,
            failure_action: FailureAction::Pause,
            max_failure_ratio: 0.0,
        }
    );
    assert_eq!(
        svc("web").rollback,
        UpdateConfig {
            parallelism: 3,
            delay_ms: 5_000,
            order: UpdateOrder::StartFirst,
            monitor_ms: 30_000,
            failure_action: FailureAction::Continue,
            max_failure_ratio: 0.5,
        }
    );
    // Without rollback_config a rollback rolls out with the same defaults as an update.
    assert_eq!(svc("worker").rollback, UpdateConfig::default());
    assert_eq!(svc("web").update.parallelism, 2);
    // `failure_action: rollback` is honored in update_config; in rollback_config it is
    // kept, and warned about, because a failed rollback pauses.
    assert_eq!(
        svc("cautious").update,
        UpdateConfig {
            parallelism: 0,
            failure_action: FailureAction::Rollback,
            ..UpdateConfig::default()
        }
    );
    assert_eq!(
        svc("cautious").rollback,
        UpdateConfig {
            parallelism: 1,
            failure_action: FailureAction::Rollback,
            ..UpdateConfig::default()
        }
    );

    let prefix = format!("{}/", fixtures().display());
    let warnings: Vec<String> = l
        .diagnostics
        .iter()
        .map(|d| d.to_string().replace(&prefix, ""))
        .collect();
    assert_eq!(
        warnings,
        vec![
            "update/compose.yaml:33:25: warning: services.cautious.deploy.rollback_config.failure_action: a rollback that fails pauses; it does not roll back again",
        ]
    );

    let text = render(&l);
    for line in [
        "#   deploy.update_config    honored",
        "#   deploy.rollback_config  honored",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    assert!(!text.contains("not implemented"), "{text}");
}

#[test]
fn invalid_update_and_rollback_config_values_name_file_line_and_key() {
    let e = err(&opts(&["broken/update.yaml"]));
    assert_eq!(
        lines(&e),
        vec![
            "broken/update.yaml:6:22: error: services.web.deploy.update_config.parallelism: must be a whole number of replicas, 0 or more (0: all at once), not `-1`",
            "broken/update.yaml:7:16: error: services.web.deploy.update_config.order: `sideways` is not one of: start-first, stop-first",
            "broken/update.yaml:8:28: error: services.web.deploy.update_config.max_failure_ratio: must be a number from 0 to 1 (the fraction of replicas allowed to fail), not `2`",
            "broken/update.yaml:10:16: error: services.web.deploy.rollback_config.delay: invalid duration `soon`: use a number with a unit, e.g. 10s, 1m30s, 500ms",
        ]
    );
}

#[test]
fn render_says_the_default_restart_policy() {
    let l = ok(&opts(&["profiles/compose.yaml"]));
    let text = render(&l);
    assert!(
        text.contains("default: condition any (neither restart nor deploy.restart_policy given)"),
        "{text}"
    );
}

#[test]
fn broken_types_and_typos_are_all_reported_with_place_and_key() {
    let e = err(&opts(&["broken/typos.yaml"]));
    assert_eq!(
        lines(&e),
        vec![
            "broken/typos.yaml:2:3: error: services.web: service web has no image: add image: (the image to run) or build: (how to build it)",
            "broken/typos.yaml:3:5: error: services.web.imagee: unknown key `imagee` (not in the Compose specification; extension keys start with `x-`); did you mean `image`?",
            "broken/typos.yaml:5:17: error: services.web.deploy.replicas: must be a whole number, not `many`",
            "broken/typos.yaml:8:19: error: services.web.deploy.resources.limits.memory: invalid size `lots`: use a number with an optional unit b, k, m, g, t (e.g. 512m, 1g)",
            "broken/typos.yaml:10:7: error: services.web.ports: must be a list, not a mapping",
            "broken/typos.yaml:14:17: error: services.worker.healthcheck.interval: invalid duration `soon`: use a number with a unit, e.g. 10s, 1m30s, 500ms",
            "broken/typos.yaml:16:9: error: services.worker.ports[0]: invalid port `80000` in `80000:80`: ports are 1-65535",
        ]
    );
}

/// `services.builder` in `broken/meaning.yaml` has `build: .` and no image: that is
/// honoured now (`compose_build.rs`), so it adds no error.
#[test]
fn broken_meaning_is_all_reported() {
    let e = err(&opts(&["broken/meaning.yaml"]));
    assert_eq!(
        lines(&e),
        vec![
            "broken/meaning.yaml:3:12: error: services.web.image: required variable WEB_TAG is not set: pin the web image tag",
            "broken/meaning.yaml:4:18: error: services.web.depends_on: dependency cycle detected: web -> worker -> web",
            "broken/meaning.yaml:4:26: error: services.web.depends_on.ghost: service web depends on undefined service `ghost`",
            "broken/meaning.yaml:6:9: error: services.web.volumes[0]: service uses the undeclared volume `undeclared`: declare it under the top-level volumes: key",
            "broken/meaning.yaml:14:23: error: services.worker.deploy.placement.constraints[0]: invalid constraint `node.role==leader`: node.role is manager (the node also runs a controller) or worker",
            "broken/meaning.yaml:18:15: error: services.worker.deploy.resources.reservations.devices[0]: \"count\" and \"device_ids\" attributes are exclusive",
        ]
    );
}

#[test]
fn empty_files_and_files_without_services() {
    assert_eq!(
        lines(&err(&opts(&["broken/empty.yaml"]))),
        vec![
            "broken/empty.yaml: error: the file is empty: a Compose file needs a services: section"
        ]
    );
    assert_eq!(
        lines(&err(&opts(&["broken/no-services.yaml"]))),
        vec!["broken/no-services.yaml: error: services: no services defined: add a services: section with at least one service"]
    );
    let e = err(&opts(&["broken/does-not-exist.yaml"]));
    assert!(
        lines(&e)[0].starts_with("broken/does-not-exist.yaml: error: cannot read the Compose file"),
        "{e}"
    );
}

#[test]
fn the_default_file_is_found_in_the_working_directory() {
    // Only this test changes the working directory; it restores it before asserting.
    let before = std::env::current_dir().expect("cwd");
    std::env::set_current_dir(fixture("Weird.Dir_Name")).expect("chdir");
    let result = load(&LoadOptions::default());
    std::env::set_current_dir(before).expect("chdir back");
    let l = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.stack.services.keys().collect::<Vec<_>>(), vec!["one"]);
}

#[test]
fn each_compose_network_is_its_own_with_its_own_aliases() {
    let l = ok(&opts(&["networks/compose.yaml"]));
    let net = |name: &str, key: &str, aliases: &[&str]| ServiceNetwork {
        name: name.into(),
        key: key.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    };
    let s = &l.stack.services;
    assert_eq!(s["proxy"].networks, vec![net("front", "shop.front", &[])]);
    // Aliases belong to the network they are given on; an external network is keyed
    // by its name, whatever the stack.
    assert_eq!(
        s["web"].networks,
        vec![
            net("front", "shop.front", &[]),
            net("back", "shop.back", &["www"]),
            net("shared", "ext:shop-and-blog", &[]),
        ]
    );
    // `priority` orders the attachments (the first is the one created on).
    assert_eq!(
        s["db"].networks,
        vec![
            net("back", "shop.back", &["db2"]),
            net("private", "shop.private", &[]),
        ]
    );
    // No networks: the implicit default, keyed by the stack.
    assert_eq!(s["worker"].networks, vec![net("default", "shop", &[])]);
    let n = &l.stack.networks;
    assert_eq!(
        n.keys().collect::<Vec<_>>(),
        vec!["back", "default", "front", "private", "shared"]
    );
    assert!(n["private"].internal && !n["back"].internal);
    assert!(n["shared"].external);
    let warned = |what: &str| l.diagnostics.iter().any(|d| d.message.contains(what));
    assert!(warned("ignored: driver `macvlan`"), "{:?}", l.diagnostics);
    assert!(warned(
        "ignored: shoal gives each network its subnets from the cluster pool"
    ));
    assert!(!warned("ignored: driver `bridge`"));
}

#[test]
fn a_service_on_an_undeclared_network_is_an_error() {
    let e = err(&opts(&["networks/undefined.yaml"]));
    let l = lines(&e);
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(
        l[0].contains("services.web.networks.nowhere: refers to undefined network nowhere"),
        "{}",
        l[0]
    );
}
