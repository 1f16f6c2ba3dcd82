//! Conformance of the Compose loader over the shared corpus (`shared/compose-corpus`):
//! third-party files that upstream treats as valid must load (except where shoal refuses
//! on purpose, listed below with the reason), and the deliberately broken files must be
//! refused with a message that names the key and, where it has one, the line.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use shoal_controller::compose::{load, Diagnostic, Disposition, LoadError, LoadOptions, Loaded};

fn corpus() -> PathBuf {
    let dir = match std::env::var_os("SHOAL_COMPOSE_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/compose-corpus"),
    };
    assert!(
        dir.join("INDEX.md").is_file(),
        "the Compose corpus is missing at {}: put shared/ beside the repository or set SHOAL_COMPOSE_CORPUS",
        dir.display()
    );
    dir
}

fn base_env() -> BTreeMap<String, String> {
    [("HOME".to_string(), "/home/tester".to_string())].into()
}

fn load_files(files: Vec<PathBuf>, env: BTreeMap<String, String>) -> Result<Loaded, LoadError> {
    load(&LoadOptions {
        files,
        env,
        ..Default::default()
    })
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

fn messages(e: &LoadError) -> Vec<String> {
    e.diagnostics.iter().map(Diagnostic::to_string).collect()
}

/// Files upstream loads but shoal refuses on purpose: each error must contain one of
/// the substrings, and each substring must be matched by some error. No file is here
/// for `build:` (shoal builds them; [`no_corpus_file_is_refused_for_build`]).
fn intended_errors(rel: &str) -> Option<(&'static [&'static str], &'static str)> {
    const NO_IMAGE: &[&str] = &["has no image: add image: (the image to run) or build:"];
    Some(match rel {
        "spec-fixtures/compose-go-extends/base.yaml" => (
            &[
                "25:7: error: services.nil: must be a mapping, not null",
                "services.with-port: service with-port has no image",
            ],
            "an extends-test fragment: an empty service (`nil:`, which the schema rejects, INDEX.md) and a service with neither image nor build",
        ),
        "spec-fixtures/compose-go-attribute-snippets/environment--TestEnvironmentWhitespace.yaml"
        | "spec-fixtures/compose-go-attribute-snippets/provider--TestProvider.yaml" => (
            NO_IMAGE,
            "a service with neither image nor build (provider services and environment-only snippets)",
        ),
        "spec-fixtures/compose-go-attribute-snippets/models--TestModels.yaml" => (
            NO_IMAGE,
            "model-runner services have neither image nor build",
        ),
        "spec-fixtures/compose-go-attribute-snippets/devices--TestDeviceMapping.yaml"
        | "spec-fixtures/compose-go-attribute-snippets/devices--TestDeviceMappingLongSyntax.yaml" => (
            &["invalid device permissions `permissions`"],
            "the engine refuses a device mode that is not some of r, w and m when it creates the container; shoal says so when the file is loaded",
        ),
        "spec-fixtures/compose-go-attribute-snippets/deploy--TestDeployPlacement.yaml" => (
            &["invalid constraint `node=foo`"],
            "placement constraints must be FIELD==VALUE or FIELD!=VALUE over node.hostname/id/labels",
        ),
        "spec-fixtures/compose-go-attribute-snippets/secrets--TestSecretFileModeNumber.yaml"
        | "spec-fixtures/compose-go-attribute-snippets/secrets--TestSecretFileModeString.yaml" => (
            &["refers to undefined secret server-certificate"],
            "the service uses a secret the file does not define (upstream's test skips the consistency check `docker compose config` makes); `secret_modes_parse_like_compose` loads it with the definition added",
        ),
        "spec-fixtures/compose-go-attribute-snippets/volumes--TestImageVolume.yaml" => (
            &["mount type `image` is not supported"],
            "image mounts are not supported yet",
        ),
        "spec-fixtures/compose-go-attribute-snippets/volumes--TestNpipeVolume.yaml" => (
            &["mount type `npipe` is not supported"],
            "named pipes are Windows-only",
        ),
        _ => return None,
    })
}

fn check_intended(rel: &str, result: Result<Loaded, LoadError>, expected: &[&str], why: &str) {
    let err = match result {
        Ok(_) => panic!("{rel}: shoal should refuse it ({why}) but it loaded"),
        Err(e) => e,
    };
    let msgs = messages(&err);
    for m in &msgs {
        assert!(
            expected.iter().any(|x| m.contains(x)),
            "{rel}: unexpected error (shoal refuses this file only because {why}):\n{m}"
        );
    }
    for x in expected {
        assert!(
            msgs.iter().any(|m| m.contains(x)),
            "{rel}: expected an error containing {x:?}, got:\n{}",
            msgs.join("\n")
        );
    }
}

/// Files that need a `.env` (awesome-compose keeps it as NAME.env) or support files
/// beside them are checked by their own tests below.
fn special(rel: &str) -> bool {
    matches!(
        rel,
        "awesome-compose/pihole-cloudflared-DoH.yaml"
            | "awesome-compose/plex.yaml"
            | "awesome-compose/postgresql-pgadmin.yaml"
            | "awesome-compose/wireguard.yaml"
            | "spec-fixtures/compose-go-full-example.yml"
            | "spec-fixtures/docker-cli-stack-full-example.yml"
            | "spec-fixtures/compose-go-using-variables.yaml"
    )
}

#[test]
fn valid_upstream_files_load() {
    let root = corpus();
    let mut files = Vec::new();
    yaml_files(&root.join("awesome-compose"), &mut files);
    yaml_files(&root.join("spec-fixtures"), &mut files);
    assert!(
        files.len() >= 190,
        "expected the whole corpus, found {} files",
        files.len()
    );
    let mut loaded = 0;
    let mut refused = 0;
    for f in files {
        let rel = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
        if special(&rel) {
            continue;
        }
        let result = load_files(vec![f.clone()], base_env());
        match intended_errors(&rel) {
            Some((expected, why)) => {
                check_intended(&rel, result, expected, why);
                refused += 1;
            }
            None => {
                if let Err(e) = result {
                    panic!("{rel} should load:\n{e}");
                }
                loaded += 1;
            }
        }
    }
    // Before `build:` was honoured: 134 loaded, 52 refused (44 of them for `build:` alone).
    // Issue 14: the two device snippets with the mode `permissions` are refused.
    assert_eq!((loaded, refused), (175, 11));
}

/// Copy a sample and its `NAME.env` into a fresh directory as `compose.yaml` + `.env`.
fn with_dotenv(name: &str) -> (tempfile::TempDir, PathBuf) {
    let root = corpus().join("awesome-compose");
    let dir = tempfile::tempdir().expect("tempdir");
    let compose = dir.path().join("compose.yaml");
    fs::copy(root.join(format!("{name}.yaml")), &compose).expect("copy compose file");
    fs::copy(root.join(format!("{name}.env")), dir.path().join(".env")).expect("copy .env");
    (dir, compose)
}

#[test]
fn samples_with_dotenv_interpolate_from_it() {
    let (_d, f) = with_dotenv("plex");
    let l = load_files(vec![f], base_env()).unwrap_or_else(|e| panic!("plex: {e}"));
    let plex = &l.stack.services["plex"];
    assert_eq!(
        plex.volumes[0].source.as_deref(),
        Some("/media/your/plex/path")
    );
    assert_eq!(plex.volumes[0].target, "/media/");

    for name in ["pihole-cloudflared-DoH", "postgresql-pgadmin", "wireguard"] {
        let (_d, f) = with_dotenv(name);
        let l = load_files(vec![f], base_env()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            !l.diagnostics
                .iter()
                .any(|d| d.message.contains("is not set")),
            "{name}: every variable should come from its .env: {:?}",
            l.diagnostics
        );
    }
}

#[test]
fn sample_without_its_dotenv_fails_on_the_empty_variable() {
    // plex.yaml mounts `${PLEX_MEDIA_PATH}:/media/`; without the variable the source is empty.
    let f = corpus().join("awesome-compose/plex.yaml");
    let e = load_files(vec![f], base_env()).expect_err("empty volume source");
    let msgs = messages(&e);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].ends_with("awesome-compose/plex.yaml:10:9: error: services.plex.volumes[0]: invalid volume `:/media/`: expected [SOURCE:]TARGET[:MODE]"), "{}", msgs[0]);
}

fn full_example(name: &str) -> (tempfile::TempDir, PathBuf) {
    let root = corpus().join("spec-fixtures");
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join(name);
    fs::copy(root.join(name), &f).expect("copy");
    for support in fs::read_dir(root.join("compose-go-full-example-support")).expect("support dir")
    {
        let p = support.expect("entry").path();
        fs::copy(&p, dir.path().join(p.file_name().expect("name"))).expect("copy support");
    }
    (dir, f)
}

#[test]
fn full_examples_fail_only_where_shoal_is_stricter() {
    // Upstream loads these with consistency checks off; shoal always checks: `network_mode`
    // with `networks`, depends_on services that are not defined, a volume (or, like
    // `docker compose`, a network) not declared at the top level, and Swarm constraint
    // syntax it does not match (`node=foo`), and options the engine refuses beside
    // `network_mode: container:` (it shares that container's DNS, hosts and MAC).
    // Cluster volumes are not supported.
    let common: &[&str] = &[
        "conflicts with network_mode: the container shares another container's network",
        "services.foo: service foo declares mutually exclusive `network_mode` and `networks`",
        "services.foo.depends_on.db: service foo depends on undefined service `db`",
        "services.foo.depends_on.redis: service foo depends on undefined service `redis`",
        "invalid constraint `node=foo`",
        "service uses the undeclared volume `datavolume`",
        "services.foo.networks.other-other-network: refers to undefined network other-other-network",
    ];
    let (_d, f) = full_example("compose-go-full-example.yml");
    check_intended(
        "compose-go-full-example.yml",
        load_files(vec![f], base_env()),
        common,
        "shoal is stricter",
    );

    let (_d, f) = full_example("docker-cli-stack-full-example.yml");
    let mut expected = common.to_vec();
    expected.push("mount type `cluster` is not supported");
    check_intended(
        "docker-cli-stack-full-example.yml",
        load_files(vec![f], base_env()),
        &expected,
        "shoal is stricter",
    );
}

#[test]
fn using_variables_passes_the_schema_stage() {
    // Every typed field is `${VARIABLE}`: the file exists to prove the schema accepts
    // variables before interpolation. No single value fits every field, so it cannot
    // load; what matters is that no error is a schema error (unknown key, wrong type).
    let f = corpus().join("spec-fixtures/compose-go-using-variables.yaml");
    let e = load_files(vec![f], base_env()).expect_err("no value fits every field");
    for m in messages(&e) {
        assert!(
            !m.contains("unknown key")
                && !m.contains("must be a mapping")
                && !m.contains("must be a list"),
            "schema-stage error: {m}"
        );
    }
}

/// What each `invalid/` file must be refused with (a substring of one error).
const INVALID: &[(&str, &str)] = &[
    ("compose-go-TestBadDevelopConfig.yaml", ":11:11: error: services.frontend.develop.watch[0]: missing required key `action`"),
    ("compose-go-TestBadServiceConfig.yaml", ":5:3: error: services.redis: service redis declares mutually exclusive `network_mode` and `networks`"),
    ("compose-go-TestDecodeErrors-tab.yaml", ":6:12: error: invalid YAML: while scanning a plain scalar, found a tab"),
    ("compose-go-TestDevelopMissingAction.yaml", ":10:11: error: services.web.develop.watch[0]: missing required key `action`"),
    ("compose-go-TestEnvironmentInvalidObject.yaml", ":7:18: error: services.foo.environment: must be a mapping or a list, not a string"),
    ("compose-go-TestEnvironmentInvalidValue.yaml", ":8:12: error: services.foo.environment.FOO: must be a string, a number, a boolean or null, not a list"),
    ("compose-go-TestInvalidEnvironmentObject.yaml", ":7:18: error: services.dict-env.environment: must be a mapping or a list, not a string"),
    ("compose-go-TestInvalidEnvironmentValue.yaml", ":8:12: error: services.dict-env.environment.FOO: must be a string, a number, a boolean or null, not a list"),
    ("compose-go-TestInvalidExternalAndDirverOptsCombination.yaml", ":5:3: error: volumes.external_volume: conflicting parameters \"external\" and \"driver_opts\" specified"),
    ("compose-go-TestInvalidExternalAndDriverCombination.yaml", ":5:3: error: volumes.external_volume: conflicting parameters \"external\" and \"driver\" specified"),
    ("compose-go-TestInvalidExternalAndLabelsCombination.yaml", ":5:3: error: volumes.external_volume: conflicting parameters \"external\" and \"labels\" specified"),
    ("compose-go-TestInvalidProjectNameType.yaml", ":3:7: error: name: must be a string, not an integer"),
    ("compose-go-TestInvalidResource.yaml", ":9:9: error: services.foo.deploy.resources.impossible: unknown key `impossible`"),
    ("compose-go-TestInvalidTopLevelObjectType-list.yaml", ":3:1: error: top-level object must be a mapping, not a list"),
    ("compose-go-TestInvalidTopLevelObjectType-scalar.yaml", ":3:1: error: top-level object must be a mapping, not an integer"),
    ("compose-go-TestLoadBindMountSourceMustNotBeEmpty.yaml", ":8:9: error: services.tmpfs.volumes[0]: invalid mount config for type \"bind\": field Source must not be empty"),
    ("compose-go-TestLoadNetworkInvalidExternalNameAndNameCombination.yaml", ":5:3: error: networks.foo: name and external.name conflict; only use name"),
    ("compose-go-TestLoadSSHWithoutValueInBuildConfig.yaml", "error: services.test.build.ssh: must be a mapping or a list, not null"),
    ("compose-go-TestLoadSecretInvalidExternalNameAndNameCombination.yaml", ":5:3: error: secrets.external_secret: name and external.name conflict; only use name"),
    ("compose-go-TestLoadTmpfsVolumeAdditionalPropertyNotAllowed.yaml", ":10:9: error: services.tmpfs.volumes[0].foo: unknown key `foo`"),
    ("compose-go-TestLoadTmpfsVolumeSizeMustBeGTEQZero.yaml", ":11:17: error: services.tmpfs.volumes[0].tmpfs.size: must be at least 0"),
    ("compose-go-TestLoadTmpfsVolumeSizeMustBeInteger.yaml", ":11:17: error: services.tmpfs.volumes[0].tmpfs.size: must be an integer or a string, not a number"),
    ("compose-go-TestLoadVolumeInvalidExternalNameAndNameCombination.yaml", ":5:3: error: volumes.external_volume: name and external.name conflict; only use name"),
    ("compose-go-TestNonMappingObject-2.yaml", ":5:8: error: services.foo: must be a mapping, not a string"),
    ("compose-go-TestNonMappingObject-3.yaml", ":5:3: error: networks: must be a mapping, not a list"),
    ("compose-go-TestNonMappingObject-4.yaml", ":5:12: error: networks.default: must be a mapping or null, not a string"),
    ("compose-go-TestNonMappingObject-5.yaml", ":5:3: error: volumes: must be a mapping, not a list"),
    ("compose-go-TestNonMappingObject-6.yaml", ":5:9: error: volumes.data: must be a mapping or null, not a string"),
    ("compose-go-TestNonMappingObject.yaml", ":5:3: error: services: must be a mapping, not a list"),
    ("compose-go-TestNonStringImage.yaml", ":6:12: error: services.foo.image: must be a string, not a list"),
    ("compose-go-TestNonStringKeys-2.yaml", ":10:11: error: networks.default.ipam.config[0].123: non-string key in networks.default.ipam.config[0]: 123"),
    ("compose-go-TestNonStringKeys-3.yaml", ":7:7: error: services.dict-env.environment.1: non-string key in services.dict-env.environment: 1"),
    ("compose-go-TestNonStringKeys-toplevel.yaml", ":3:1: error: 123: non-string key in the top level: 123"),
    ("compose-go-TestNonStringKeys.yaml", ":6:3: error: services.123: non-string key in services: 123"),
    ("compose-go-TestServiceDeviceRequestCapabilitiesMandatory.yaml", ":11:15: error: services.hello-world.deploy.resources.reservations.devices[0]: missing required key `capabilities`"),
    ("compose-go-TestServiceDeviceRequestCountAndDeviceIdsExclusive.yaml", ":11:15: error: services.hello-world.deploy.resources.reservations.devices[0]: \"count\" and \"device_ids\" attributes are exclusive"),
    ("compose-go-TestServiceDeviceRequestCountInvalidStringType.yaml", ":13:22: error: services.hello-world.deploy.resources.reservations.devices[0].count: invalid value \"some_string\", the only value allowed is 'all' or a number"),
    ("compose-go-TestV1Unsupported.yaml", ":3:1: error: foo: unknown key `foo` (not in the Compose specification"),
    ("compose-go-TestWithSelectedServicesOption_SkipsMissingEnvFile.yaml", ":10:9: error: services.other.env_file[0]: env_file "),
    ("compose-go-testdata-compose-depends-on-cycle.yaml", ":8:9: error: services.service1.depends_on: dependency cycle detected: service1 -> service2 -> service3 -> service1"),
    ("compose-go-testdata-compose-depends-on-self.yaml", ":8:9: error: services.service1.depends_on: dependency cycle detected: service1 -> service1"),
    ("compose-include-cycle.yaml", "error: include: include cycle detected: "),
    ("docker-compose-e2e-wrong-composefile-unknown-field.yaml", ":6:5: error: services.simple.wrongField: unknown key `wrongField`"),
];

/// `invalid/` files that shoal's loader accepts, and why.
const INVALID_BUT_LOADS: &[(&str, &str)] = &[
    (
        "compose-go-TestLoadEmptyContent_MissingProject.yaml",
        "context-dependent (INDEX.md): the project name comes from the directory, `invalid`",
    ),
    (
        "docker-compose-e2e-wrong-composefile-unknown-image.yaml",
        "runtime-invalid (INDEX.md): the image cannot be pulled, which only deploy can find out",
    ),
    (
        "docker-compose-e2e-wrong-composefile-build-error.yaml",
        "runtime-invalid (INDEX.md): the build context is not there; `shoal config` warns and `shoal deploy` refuses it",
    ),
];

#[test]
fn invalid_files_are_refused_with_file_line_and_key() {
    let dir = corpus().join("invalid");
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    assert_eq!(
        files.len(),
        INVALID.len() + INVALID_BUT_LOADS.len(),
        "every invalid/ file is listed"
    );
    for f in files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let result = load_files(vec![f.clone()], base_env());
        if let Some((_, why)) = INVALID_BUT_LOADS.iter().find(|(n, _)| *n == name) {
            let l = result.unwrap_or_else(|e| panic!("{name} loads in shoal ({why}):\n{e}"));
            if name.contains("MissingProject") {
                assert_eq!(l.stack.name, "invalid");
            }
            if name.contains("build-error") {
                let build = l.stack.services["simple"].build.as_ref().expect("build");
                assert!(build.context_missing, "{build:?}");
                let warned = l.diagnostics.iter().any(|d| {
                    d.to_string()
                        .contains(":5:13: warning: services.simple.build: build context service1 (")
                        && d.message.contains(
                            "is not there: shoal deploy builds on this machine and will refuse it",
                        )
                });
                assert!(warned, "{:?}", l.diagnostics);
            }
            continue;
        }
        let (_, expected) = INVALID
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} is not listed in INVALID"));
        let e = match result {
            Ok(_) => panic!("{name} must be refused with {expected:?}"),
            Err(e) => e,
        };
        let text = e.to_string();
        let full = format!("{}{expected}", f.display());
        let wanted = if expected.starts_with(':') {
            full.as_str()
        } else {
            expected
        };
        assert!(
            text.contains(wanted),
            "{name}: expected {wanted:?} in:\n{text}"
        );
    }
}

fn snippet(name: &str) -> Loaded {
    let f = corpus()
        .join("spec-fixtures/compose-go-attribute-snippets")
        .join(name);
    load_files(vec![f], base_env()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn snippets_give_the_values_upstream_asserts() {
    use shoal_proto::spec::*;
    let l = snippet("ports--TestPortsShortSyntax.yaml");
    let p = |target, published: Option<u16>, protocol| PortSpec {
        target,
        published,
        protocol,
        host_ip: None,
        mode: PortMode::Ingress,
    };
    assert_eq!(
        l.stack.services["foo"].ports,
        vec![
            p(8080, Some(80), Protocol::Tcp),
            p(8090, Some(90), Protocol::Udp),
            p(8600, None, Protocol::Tcp)
        ]
    );
    let l = snippet("ports--TestPortsRange.yaml");
    assert_eq!(
        l.stack.services["foo"].ports,
        vec![
            p(8080, Some(80), Protocol::Tcp),
            p(8081, Some(81), Protocol::Tcp),
            p(8082, Some(82), Protocol::Tcp)
        ]
    );

    let l = snippet("deploy--TestDeployResources.yaml");
    assert_eq!(
        l.stack.services["foo"].resources,
        Resources {
            limits: Limits {
                nano_cpus: Some(1_000_000),
                memory_bytes: Some(50 * 1024 * 1024),
                pids: None
            },
            reservations: Limits {
                nano_cpus: Some(100_000),
                memory_bytes: Some(20 * 1024 * 1024),
                pids: None
            },
        }
    );
    assert!(l
        .diagnostics
        .iter()
        .any(|d| d.key.ends_with("reservations.generic_resources")));

    let l = snippet("deploy--TestDeployUpdateRollbackConfig.yaml");
    assert_eq!(
        l.stack.services["foo"].update,
        UpdateConfig {
            parallelism: 3,
            delay_ms: 10_000,
            order: UpdateOrder::StartFirst,
            monitor_ms: 60_000,
            failure_action: FailureAction::Continue,
            max_failure_ratio: 0.3,
        }
    );
    // Upstream asserts parallelism 3 and order start-first for rollback_config; the
    // snippet gives it the same values as update_config, so every field is checked.
    assert_eq!(
        l.stack.services["foo"].rollback,
        UpdateConfig {
            parallelism: 3,
            delay_ms: 10_000,
            order: UpdateOrder::StartFirst,
            monitor_ms: 60_000,
            failure_action: FailureAction::Continue,
            max_failure_ratio: 0.3,
        }
    );
    assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
    let honored = |key: &str| {
        l.keys
            .iter()
            .any(|k| k.service == "foo" && k.key == key && k.disposition == Disposition::Honored)
    };
    assert!(honored("deploy.update_config") && honored("deploy.rollback_config"));

    let l = snippet("healthcheck--TestHealthcheck.yaml");
    assert_eq!(
        l.stack.services["foo"].healthcheck,
        Some(HealthcheckSpec {
            test: vec!["CMD-SHELL".into(), "echo \"hello world\"".into()],
            interval_ms: Some(10_000),
            timeout_ms: Some(1_000),
            retries: Some(5),
            start_period_ms: Some(15_000),
            start_interval_ms: Some(5_000),
            disable: false,
        })
    );

    let l = snippet("devices--TestDeviceReservation.yaml");
    assert_eq!(
        l.stack.services["test"].gpus,
        vec![GpuRequest {
            count: None,
            driver: Some("nvidia".into()),
            capabilities: vec!["gpu".into()],
            ..Default::default()
        }]
    );

    let l = snippet("gpus--TestGpus.yaml");
    assert_eq!(
        l.stack.services["test"].gpus,
        vec![
            GpuRequest {
                driver: Some("nvidia".into()),
                capabilities: vec!["gpu".into()],
                ..Default::default()
            },
            GpuRequest {
                driver: Some("3dfx".into()),
                device_ids: vec!["voodoo2".into()],
                capabilities: vec!["gpu".into(), "directX".into()],
                ..Default::default()
            },
        ]
    );
}

#[test]
fn secret_modes_parse_like_compose() {
    // The two mode snippets, with the secret they use defined.
    for name in [
        "secrets--TestSecretFileModeNumber.yaml",
        "secrets--TestSecretFileModeString.yaml",
    ] {
        let src = corpus()
            .join("spec-fixtures/compose-go-attribute-snippets")
            .join(name);
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("compose.yaml");
        let text = fs::read_to_string(src).expect("read snippet");
        fs::write(
            &f,
            format!("{text}\nsecrets:\n  server-certificate:\n    file: ./cert.pem\n"),
        )
        .expect("write");
        let l = load_files(vec![f], base_env()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let r = &l.stack.services["foo"].secrets;
        assert_eq!(r.len(), 1, "{name}");
        assert_eq!(
            (r[0].source.as_str(), r[0].path().as_str(), r[0].mode),
            (
                "server-certificate",
                "/run/secrets/server.cert",
                Some(0o440)
            ),
            "{name}"
        );
        assert_eq!(l.stack.secrets, vec!["server-certificate".to_string()]);
    }
    // Upstream's service secrets: short and long forms, uid/gid as strings.
    let l = snippet("secrets--TestServiceSecrets.yaml");
    let r = &l.stack.services["foo"].secrets;
    assert_eq!(r[0].path(), "/run/secrets/secret1");
    assert_eq!(
        (r[1].path().as_str(), r[1].uid, r[1].gid, r[1].mode),
        ("/run/secrets/my_secret", Some(103), Some(103), Some(0o440))
    );
}

#[test]
fn network_snippets_give_each_network_its_key_and_aliases() {
    use shoal_proto::spec::*;
    let l = snippet("networks--TestServiceNetworks.yaml");
    let net = |name: &str, aliases: &[&str]| ServiceNetwork {
        name: name.into(),
        key: format!("test.{name}"),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    };
    assert_eq!(
        l.stack.services["foo"].networks,
        vec![
            net("some-network", &["alias1", "alias3"]),
            net("other-network", &[]),
            net("other-other-network", &[]),
        ]
    );
    // Static addresses cannot hold across nodes: said, not silently dropped.
    assert!(l
        .diagnostics
        .iter()
        .any(|d| d.message.contains("ignored: `ipv4_address`")));

    // A service listing no networks is on the implicit default one; declared externals
    // are keyed by their name.
    let l = snippet("networks--TestTopLevelNetworks.yaml");
    assert_eq!(
        l.stack.services["foo"].networks,
        vec![ServiceNetwork {
            name: "default".into(),
            key: "test".into(),
            aliases: vec![],
        }]
    );
    assert_eq!(l.stack.networks.keys().collect::<Vec<_>>(), vec!["default"]);
    for why in [
        "ignored: shoal gives each network its subnets",
        "driver_opts",
    ] {
        assert!(
            l.diagnostics.iter().any(|d| d.message.contains(why)),
            "{why}: {:?}",
            l.diagnostics
        );
    }

    let l = snippet("network_internal--TestNetworkInternal.yaml");
    assert!(
        l.stack.networks.values().all(|n| !n.internal),
        "unused networks are not kept"
    );
}

/// Issue 13: `shoal config` accepts every `build:` service in the corpus. Their contexts
/// were not copied with the files, so each is a warning and `context_missing`, never an
/// error; the only `build:` error left is upstream's own invalid file.
#[test]
fn no_corpus_file_is_refused_for_build() {
    const UPSTREAM_INVALID: &str = "invalid/compose-go-TestLoadSSHWithoutValueInBuildConfig.yaml";
    let root = corpus();
    let mut files = Vec::new();
    for dir in ["awesome-compose", "spec-fixtures", "invalid"] {
        yaml_files(&root.join(dir), &mut files);
    }
    let about_build = |d: &Diagnostic| d.key.split('.').nth(2) == Some("build");
    let (mut built, mut missing) = (0, 0);
    for f in files {
        let rel = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
        match load_files(vec![f.clone()], base_env()) {
            Ok(l) => {
                for (name, svc) in &l.stack.services {
                    let Some(b) = &svc.build else { continue };
                    built += 1;
                    // `at` is where `build:` is written: this file or one it extends/includes.
                    let (file, line) = b.at.rsplit_once(':').unwrap_or_default();
                    assert!(
                        Path::new(file).is_file() && line.parse::<usize>().is_ok_and(|l| l > 0),
                        "{rel}: {name}: build.at {:?}",
                        b.at
                    );
                    if b.context_missing {
                        missing += 1;
                        let key = format!("services.{name}.build");
                        assert!(
                            l.diagnostics.iter().any(|d| d.key.starts_with(&key)
                                && d.message.contains("shoal deploy")
                                && d.line.is_some()),
                            "{rel}: {name}: a missing context must be a warning with its line: {:?}",
                            l.diagnostics
                        );
                    } else {
                        assert!(Path::new(&b.context).is_dir(), "{rel}: {name}: {b:?}");
                    }
                }
            }
            Err(e) if rel == UPSTREAM_INVALID => {
                assert!(
                    e.diagnostics
                        .iter()
                        .all(|d| d.key == "services.test.build.ssh"),
                    "{e}"
                );
            }
            Err(e) => {
                let refused: Vec<String> = e
                    .diagnostics
                    .iter()
                    .filter(|d| about_build(d))
                    .map(Diagnostic::to_string)
                    .collect();
                assert!(
                    refused.is_empty(),
                    "{rel} is refused for build:\n{}",
                    refused.join("\n")
                );
            }
        }
    }
    assert_eq!(
        (built, missing),
        (59, 36),
        "build: services loaded, with missing contexts"
    );
}

#[test]
fn build_snippets_give_the_values_upstream_asserts() {
    // The loader resolves `..` without the disk; the corpus path has some.
    let dir = fs::canonicalize(corpus().join("spec-fixtures/compose-go-attribute-snippets"))
        .expect("snippets dir");
    let l = snippet("build--TestBuildConfig.yaml");
    let b = l.stack.services["foo"].build.clone().expect("build");
    assert_eq!(b.context, dir.join("dir").display().to_string());
    assert!(b.context_missing, "./dir is not in the corpus");
    assert_eq!(b.dockerfile.as_deref(), Some("Dockerfile"));
    assert_eq!(b.args, [("foo".to_string(), "bar".to_string())].into());
    assert_eq!(
        (b.target.as_deref(), b.network.as_deref()),
        (Some("foo"), Some("foo"))
    );
    assert_eq!(b.labels, [("FOO".to_string(), "BAR".to_string())].into());
    assert_eq!(
        b.tags,
        vec!["foo:v1.0.0", "docker.io/username/foo:my-other-tag"]
    );
    assert_eq!(b.platforms, vec!["linux/amd64", "linux/arm64"]);
    let ignored = |key: &str| {
        l.keys.iter().any(|k| {
            k.key == key && matches!(&k.disposition, Disposition::Ignored(why) if !why.is_empty())
        })
    };
    assert!(ignored("build.cache_from") && ignored("build.additional_contexts"));
    assert!(l
        .keys
        .iter()
        .any(|k| k.key == "build" && k.disposition == Disposition::Honored));

    let l = snippet("build--TestDockerfileInline.yaml");
    let b = l.stack.services["bar"].build.clone().expect("build");
    assert_eq!(
        b.dockerfile_inline.as_deref(),
        Some("FROM alpine\nRUN echo \"hello\" > /world.txt\n")
    );
    assert_eq!(
        b.context,
        dir.display().to_string(),
        "the default context is `.`"
    );
    assert!(!b.context_missing);
    assert_eq!(
        l.stack.services["bar"].image, "",
        "the CLI names the built image"
    );
}
