//! The loader's `secrets:` and `configs:`: sources recorded at load, contents read at
//! deploy (`compose::secret_contents`, `config_contents`), and every mistake reported at
//! its file:line and key.

use std::collections::BTreeMap;
use std::path::Path;

use shoal_controller::compose::{self, LoadError, LoadOptions, Loaded};

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn load(dir: &Path, env: &[(&str, &str)]) -> Result<Loaded, LoadError> {
    compose::load(&LoadOptions {
        files: vec![dir.join("compose.yaml")],
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
}

fn messages(e: &LoadError) -> Vec<String> {
    e.diagnostics.iter().map(|d| d.to_string()).collect()
}

const STACK: &str = r#"name: sec
services:
  app:
    image: busybox
    secrets:
      - db_password
      - source: api_key
        target: /etc/app/key
        uid: "1000"
        gid: "1000"
        mode: 0400
  other:
    image: busybox
secrets:
  db_password:
    file: ./secrets/db.txt
  api_key:
    environment: API_KEY
  unused_external:
    external: true
"#;

#[test]
fn sources_are_recorded_at_load_and_read_at_deploy() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "compose.yaml", STACK);
    write(dir.path(), "secrets/db.txt", "s3cret\n");
    let l = load(dir.path(), &[("API_KEY", "k-123")]).unwrap();

    // Only the secrets services use, in name order; never their contents.
    assert_eq!(l.stack.secrets, vec!["api_key", "db_password"]);
    let refs = &l.stack.services["app"].secrets;
    assert_eq!(
        refs.iter()
            .map(|r| (r.source.as_str(), r.path(), r.uid, r.gid, r.mode))
            .collect::<Vec<_>>(),
        vec![
            (
                "db_password",
                "/run/secrets/db_password".to_string(),
                None,
                None,
                None
            ),
            (
                "api_key",
                "/etc/app/key".to_string(),
                Some(1000),
                Some(1000),
                Some(0o400)
            ),
        ]
    );
    assert!(
        refs.iter().all(|r| r.digest.is_empty()),
        "the controller sets digests"
    );
    assert!(l.stack.services["other"].secrets.is_empty());
    let json = serde_json::to_string(&l.stack).unwrap();
    assert!(
        !json.contains("s3cret") && !json.contains("k-123"),
        "{json}"
    );
    assert!(!format!("{l:?}").contains("k-123"), "Debug shows no value");

    let contents = compose::secret_contents(&l).unwrap();
    assert_eq!(
        contents,
        BTreeMap::from([
            ("api_key".to_string(), b"k-123".to_vec()),
            ("db_password".to_string(), b"s3cret\n".to_vec()),
        ])
    );
}

#[test]
fn a_secret_file_is_relative_to_the_compose_file_not_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "compose.yaml",
        "name: inc\ninclude:\n  - sub/part.yaml\nservices:\n  app:\n    image: busybox\n    secrets: [token]\n",
    );
    write(
        dir.path(),
        "sub/part.yaml",
        "services:\n  side:\n    image: busybox\nsecrets:\n  token:\n    file: ./token.txt\n",
    );
    write(dir.path(), "sub/token.txt", "from-sub");
    let l = load(dir.path(), &[]).unwrap();
    assert_eq!(
        compose::secret_contents(&l).unwrap()["token"],
        b"from-sub".to_vec()
    );
}

#[test]
fn what_cannot_be_read_is_an_error_at_the_secret_s_definition() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "compose.yaml",
        r#"name: bad
services:
  app:
    image: busybox
    secrets: [missing_file, unset_env, outside, nothing, big]
secrets:
  missing_file:
    file: ./nope.txt
  unset_env:
    environment: NOT_SET_ANYWHERE
  outside:
    external: true
  nothing:
    labels: {a: b}
  big:
    file: ./big.bin
"#,
    );
    write(
        dir.path(),
        "big.bin",
        &"x".repeat(compose::MAX_SECRET_BYTES + 1),
    );
    // Loading works (so `shoal config` does); reading the contents does not. An
    // external secret is the cluster's to give (`shoal secret create`): not read here.
    let l = load(dir.path(), &[]).unwrap();
    let outside = l.stack.services["app"]
        .secrets
        .iter()
        .find(|r| r.source == "outside")
        .unwrap();
    assert_eq!(outside.external.as_deref(), Some("outside"));
    let e = compose::secret_contents(&l).unwrap_err();
    let m = messages(&e);
    let file = dir.path().join("compose.yaml").display().to_string();
    let expect = [
        format!("{file}:7:3: error: secrets.missing_file: cannot read the secret's file {}", dir.path().join("nope.txt").display()),
        format!("{file}:9:3: error: secrets.unset_env: the environment variable NOT_SET_ANYWHERE is not set"),
        format!("{file}:13:3: error: secrets.nothing: a secret needs file: or environment:"),
        format!("{file}:15:3: error: secrets.big: the secret is {} bytes; at most {} are allowed", compose::MAX_SECRET_BYTES + 1, compose::MAX_SECRET_BYTES),
    ];
    assert_eq!(m.len(), expect.len(), "{m:#?}");
    for x in &expect {
        assert!(
            m.iter().any(|l| l.starts_with(x.as_str())),
            "no {x:?} in {m:#?}"
        );
    }
}

#[test]
fn service_mistakes_are_load_errors_with_place_and_key() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "compose.yaml",
        r#"name: bad
services:
  app:
    image: busybox
    secrets:
      - ghost
      - source: a
        target: ../../etc/passwd
      - source: a
        target: /run/secrets/b
      - b
      - source: a
        mode: rwx
      - target: x
secrets:
  a:
    file: ./a
  b:
    file: ./b
"#,
    );
    let e = load(dir.path(), &[]).unwrap_err();
    let m = messages(&e);
    let file = dir.path().join("compose.yaml").display().to_string();
    for x in [
        format!("{file}:6:9: error: services.app.secrets[0]: refers to undefined secret ghost"),
        format!("{file}:7:9: error: services.app.secrets[1]: target `../../etc/passwd` must be a file name"),
        format!("{file}:11:9: error: services.app.secrets[3]: two secrets are mounted at /run/secrets/b"),
        format!("{file}:13:15: error: services.app.secrets[4].mode: must be a file mode such as 0440, not `rwx`"),
        format!("{file}:14:9: error: services.app.secrets[5]: needs a source:"),
    ] {
        assert!(m.iter().any(|l| l.starts_with(x.as_str())), "no {x:?} in {m:#?}");
    }
}

#[test]
fn configs_take_the_same_path_with_their_own_targets_and_inline_content() {
    let dir = tempfile::tempdir().unwrap();
    // docker/compose's own e2e fixture for configs (TestConfigFromEnv), with a file.
    write(
        dir.path(),
        "compose.yaml",
        r#"name: conf
services:
  from_env:
    image: alpine
    configs:
      - source: from_env
  from_file:
    image: alpine
    configs:
      - source: from_file
  inlined:
    image: alpine
    configs:
      - source: inlined
        target: /target
  relative:
    image: alpine
    configs:
      - source: inlined
        target: etc/x.conf
  ghost:
    image: alpine
    configs: [nope]
configs:
  from_env:
    environment: CONFIG
  from_file:
    file: config.txt
  inlined:
    content: This is my $CONFIG
"#,
    );
    write(dir.path(), "config.txt", "from a file");
    let e = load(dir.path(), &[("CONFIG", "config")]).unwrap_err();
    let m = messages(&e);
    assert_eq!(m.len(), 1, "{m:#?}");
    assert!(
        m[0].contains(":23:15: error: services.ghost.configs[0]: refers to undefined config nope: declare it under the top-level configs: key"),
        "{m:#?}"
    );

    let text = std::fs::read_to_string(dir.path().join("compose.yaml")).unwrap();
    let cut = text.find("  ghost:").unwrap();
    let end = text.find("configs:\n  from_env").unwrap();
    write(
        dir.path(),
        "compose.yaml",
        &format!("{}{}", &text[..cut], &text[end..]),
    );
    let l = load(dir.path(), &[("CONFIG", "config")]).unwrap();
    let path = |svc: &str| l.stack.services[svc].configs[0].path();
    assert_eq!(path("from_env"), "/from_env");
    assert_eq!(path("from_file"), "/from_file");
    assert_eq!(path("inlined"), "/target");
    assert_eq!(path("relative"), "/etc/x.conf");
    assert!(l.stack.services["inlined"].secrets.is_empty());
    assert_eq!(l.stack.configs, vec!["from_env", "from_file", "inlined"]);
    assert!(l.stack.secrets.is_empty());
    assert_eq!(
        compose::config_contents(&l).unwrap(),
        BTreeMap::from([
            ("from_env".to_string(), b"config".to_vec()),
            ("from_file".to_string(), b"from a file".to_vec()),
            ("inlined".to_string(), b"This is my config".to_vec()),
        ])
    );
}

#[test]
fn external_secrets_are_named_as_compose_names_them() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "compose.yaml",
        r#"name: ext
services:
  app:
    image: busybox
    secrets: [plain, renamed, legacy]
    configs: [conf]
secrets:
  plain:
    external: true
  renamed:
    external: true
    name: prod_db_password
  legacy:
    external:
      name: old_style
configs:
  conf:
    external: true
"#,
    );
    let l = load(dir.path(), &[]).unwrap();
    let ext: Vec<Option<&str>> = l.stack.services["app"]
        .secrets
        .iter()
        .map(|r| r.external.as_deref())
        .collect();
    assert_eq!(
        ext,
        vec![Some("plain"), Some("prod_db_password"), Some("old_style")]
    );
    // Nothing to read for external secrets; external configs have no store.
    assert!(compose::secret_contents(&l).unwrap().is_empty());
    let e = compose::config_contents(&l).unwrap_err();
    assert!(
        messages(&e)[0].contains("configs.conf: external configs are not supported"),
        "{e}"
    );
}
