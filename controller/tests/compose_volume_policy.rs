//! `x-shoal-volume` on top-level volumes: the policy each form gives, and errors that
//! name the file, line and key.

use shoal_controller::compose::{load, LoadError, LoadOptions, Loaded};
use shoal_proto::spec::VolumePolicy;

fn load_str(yaml: &str) -> (tempfile::TempDir, Result<Loaded, LoadError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, yaml).expect("write compose file");
    let o = LoadOptions {
        files: vec![file],
        ..Default::default()
    };
    let r = load(&o);
    (dir, r)
}

fn with(volume: &str) -> String {
    format!(
        "services:\n  db:\n    image: busybox\n    volumes: [data:/data]\nvolumes:\n  data:\n{volume}"
    )
}

fn policy(volume: &str) -> VolumePolicy {
    let (_dir, r) = load_str(&with(volume));
    let l = r.unwrap_or_else(|e| panic!("should load:\n{e}"));
    l.stack.volumes["data"].policy.clone()
}

fn error(volume: &str) -> String {
    let (_dir, r) = load_str(&with(volume));
    match r {
        Ok(l) => panic!("should fail, loaded {:?}", l.stack.volumes["data"]),
        Err(e) => e
            .diagnostics
            .iter()
            .map(|d| format!("{}:{}", d.line.unwrap_or(0), d))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[test]
fn a_volume_is_bound_unless_it_says_otherwise() {
    assert_eq!(policy("    labels: {a: b}\n"), VolumePolicy::default());
    assert!(policy("    x-shoal-volume: {policy: ephemeral}\n").ephemeral);
    assert_eq!(
        policy("    x-shoal-volume: {replicas: 2, every: 30s}\n"),
        VolumePolicy {
            ephemeral: false,
            replicas: Some(2),
            every_ms: Some(30_000),
        }
    );
    assert_eq!(
        policy("    x-shoal-volume:\n      policy: bound\n      replicas: 3\n").replicas,
        Some(3)
    );
}

#[test]
fn mistakes_name_the_line_and_key() {
    let e = error("    x-shoal-volume: {policy: sometimes}\n");
    assert!(e.starts_with("7:"), "{e}");
    assert!(e.contains("volumes.data.x-shoal-volume.policy"), "{e}");
    assert!(e.contains("must be bound or ephemeral"), "{e}");
    let e = error("    x-shoal-volume: {copies: 2}\n");
    assert!(e.contains("unknown x-shoal-volume key `copies`"), "{e}");
    let e = error("    x-shoal-volume: {replicas: 0}\n");
    assert!(e.contains("must be at least 1"), "{e}");
    let e = error("    x-shoal-volume: {policy: ephemeral, replicas: 2}\n");
    assert!(
        e.contains("an ephemeral volume has no standby copies"),
        "{e}"
    );
    let e = error("    external: true\n    x-shoal-volume: {replicas: 2}\n");
    assert!(
        e.contains("an external volume is not the cluster's to keep"),
        "{e}"
    );
    let e = error("    x-shoal-volume: ephemeral\n");
    assert!(e.contains("must be a mapping"), "{e}");
}
