//! Compose `secrets:` (and a `configs:` entry) through `shoal up` and `shoal deploy` on
//! the local Docker: a file secret and an environment secret are readable in the
//! container at their paths, kept
//! on a tmpfs on the node, and in clear nowhere else: not in the data dir, `ps`,
//! `services`, nor in what Docker was asked (no environment variable carries them).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use shoal_tests::{
    docker, ensure_test_image, eventually, files_holding, service_containers, shoal_bin, text,
    ShoalUp,
};

const STACK: &str = "e2esecret";
const PASSWORD: &str = "pa55-w0rd-from-a-file";
const API_KEY: &str = "api-key-from-the-environment";

fn write_stack(dir: &Path) {
    std::fs::write(
        dir.join("compose.yaml"),
        format!(
            r#"name: {STACK}
services:
  app:
    image: shoal-test/busybox:latest
    command: ["sleep", "3600"]
    init: true
    secrets:
      - db_password
      - source: api_key
        target: /etc/app/key
        mode: 0400
    configs:
      - source: app_conf
        target: /etc/app.conf
configs:
  app_conf:
    content: "greeting=hello from ${{E2E_GREETER}}"
secrets:
  db_password:
    file: ./db_password.txt
  api_key:
    environment: E2E_API_KEY
"#
        ),
    )
    .unwrap();
    std::fs::write(dir.join("db_password.txt"), PASSWORD).unwrap();
    // Environment secrets come from the CLI's environment, here through `.env`.
    std::fs::write(
        dir.join(".env"),
        format!("E2E_API_KEY={API_KEY}\nE2E_GREETER=shoal\n"),
    )
    .unwrap();
}

#[test]
fn secrets_are_files_in_the_container_and_in_clear_nowhere_else() {
    ensure_test_image();
    let dir = tempfile::tempdir().unwrap();
    write_stack(dir.path());
    let up = ShoalUp::start("e2e-secrets");

    let out = up.shoal_in(
        dir.path(),
        &["deploy", "-c", "compose.yaml", "--timeout", "120"],
    );
    assert!(out.status.success(), "{}\n{}", text(&out), up.log());
    let container = eventually(Duration::from_secs(30), "the app container", || {
        service_containers(STACK, "app").into_iter().next()
    });

    // Readable inside at /run/secrets/NAME and at the long form's target, with its mode.
    let cat = |path: &str| docker(&["exec", &container, "cat", path]);
    assert_eq!(cat("/run/secrets/db_password"), PASSWORD);
    assert_eq!(cat("/etc/app/key"), API_KEY);
    assert_eq!(
        docker(&["exec", &container, "stat", "-c", "%a", "/etc/app/key"]).trim(),
        "400"
    );
    // A config (inline content, interpolated) at its target.
    assert_eq!(cat("/etc/app.conf"), "greeting=hello from shoal");
    // Read-only in the container.
    let write = Command::new("docker")
        .args([
            "exec",
            &container,
            "sh",
            "-c",
            "echo x > /run/secrets/db_password",
        ])
        .output()
        .unwrap();
    assert!(!write.status.success(), "the secret file is writable");

    // On the node, the files are on a tmpfs.
    let sources = docker(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{if eq .Destination \"/run/secrets/db_password\"}}{{.Source}}{{end}}{{end}}",
        &container,
    ]);
    let source = sources.trim();
    assert!(!source.is_empty(), "no bind mount for the secret");
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T", source])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&fs.stdout).trim(), "tmpfs");

    // Nowhere else in clear: not in what Docker holds of the container, not in `ps` or
    // `services`, not in the data dir (Raft log, snapshots, agent state).
    let inspect = docker(&["inspect", &container]);
    for secret in [PASSWORD, API_KEY] {
        assert!(!inspect.contains(secret), "{secret} in docker inspect");
        for args in [
            vec!["ps", STACK, "--format", "json"],
            vec!["services", "--format", "json"],
            vec!["ps", STACK],
            vec!["services"],
        ] {
            let out = up.shoal(&args);
            assert!(out.status.success(), "{}", text(&out));
            assert!(!text(&out).contains(secret), "{secret} in shoal {args:?}");
        }
        let hits = files_holding(&up.data_dir, secret);
        assert!(hits.is_empty(), "{secret} in clear in {hits:?}");
    }

    // A secret file that cannot be read refuses the deploy where it is defined, and
    // what runs is left alone.
    std::fs::remove_file(dir.path().join("db_password.txt")).unwrap();
    let out = up.shoal_in(dir.path(), &["deploy", "-c", "compose.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("compose.yaml:")
            && err.contains("secrets.db_password")
            && err.contains("db_password.txt"),
        "{err}"
    );
    assert_eq!(service_containers(STACK, "app"), vec![container.clone()]);

    kept_secrets(&up);

    // Removing the stack removes the files from the node's tmpfs.
    let out = up.shoal(&["rm", STACK]);
    assert!(out.status.success(), "{}", text(&out));
    eventually(Duration::from_secs(30), "the secret files removed", || {
        (!Path::new(source).exists()).then_some(())
    });
}

/// `shoal secret create` from standard input, a stack using it as `external: true`,
/// `secret ls` naming its user, and `secret rm` refused while it is used.
fn kept_secrets(up: &ShoalUp) {
    use std::io::Write as _;
    const KEPT: &str = "kept-through-stdin-7734";
    let mut create = Command::new(shoal_bin())
        .args(["secret", "create", "e2e_kept", "--addr", &up.addr])
        .env("XDG_CONFIG_HOME", &up.config_home)
        .env_remove("SHOAL_CREDENTIALS")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    create
        .stdin
        .take()
        .unwrap()
        .write_all(KEPT.as_bytes())
        .unwrap();
    let out = create.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("compose.yaml"),
        "name: e2ekept\nservices:\n  app:\n    image: shoal-test/busybox:latest\n    command: [\"sleep\", \"3600\"]\n    init: true\n    secrets: [db]\nsecrets:\n  db:\n    external: true\n    name: e2e_kept\n",
    )
    .unwrap();
    let out = up.shoal_in(
        dir.path(),
        &["deploy", "-c", "compose.yaml", "--timeout", "120"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let container = eventually(Duration::from_secs(30), "the e2ekept container", || {
        service_containers("e2ekept", "app").into_iter().next()
    });
    assert_eq!(
        docker(&["exec", &container, "cat", "/run/secrets/db"]),
        KEPT
    );

    let out = up.shoal(&["secret", "ls", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["name"], "e2e_kept");
    assert_eq!(rows[0]["used_by"], serde_json::json!(["e2ekept/app"]));
    assert!(!text(&out).contains(KEPT));
    let out = up.shoal(&["secret", "rm", "e2e_kept"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("in use by e2ekept/app"),
        "{}",
        text(&out)
    );
    assert!(files_holding(&up.data_dir, KEPT).is_empty());

    let out = up.shoal(&["rm", "e2ekept"]);
    assert!(out.status.success(), "{}", text(&out));
    eventually(Duration::from_secs(30), "the kept secret removable", || {
        up.shoal(&["secret", "rm", "e2e_kept"])
            .status
            .success()
            .then_some(())
    });
}
