//! `x-shoal-disconnect` in the Compose loader: the policy each form gives, and errors
//! that name the file, line and key.

use shoal_controller::compose::{load, LoadError, LoadOptions, Loaded};
use shoal_proto::spec::DisconnectPolicy;

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

fn policy(value: &str) -> DisconnectPolicy {
    let (_dir, r) = load_str(&format!(
        "services:\n  db:\n    image: busybox\n    x-shoal-disconnect: {value}\n"
    ));
    let l = r.unwrap_or_else(|e| panic!("should load:\n{e}"));
    l.stack.services["db"].disconnect
}

fn error(value: &str) -> String {
    let (_dir, r) = load_str(&format!(
        "services:\n  db:\n    image: busybox\n    x-shoal-disconnect: {value}\n"
    ));
    match r {
        Ok(l) => panic!(
            "should fail, loaded {:?}",
            l.stack.services["db"].disconnect
        ),
        Err(e) => e
            .diagnostics
            .iter()
            .map(|d| format!("{}:{}", d.line.unwrap_or(0), d))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[test]
fn without_the_extension_replicas_keep_running() {
    let (_dir, r) = load_str("services:\n  db:\n    image: busybox\n");
    let l = r.expect("loads");
    assert_eq!(
        l.stack.services["db"].disconnect,
        DisconnectPolicy::default()
    );
    assert_eq!(l.stack.services["db"].disconnect.stop_after_ms, None);
}

#[test]
fn keep_stop_and_stop_after() {
    assert_eq!(policy("keep").stop_after_ms, None);
    assert_eq!(policy("stop").stop_after_ms, Some(5_000));
    assert_eq!(policy("{stop_after: 2s}").stop_after_ms, Some(2_000));
    assert_eq!(policy("{stop_after: 1500ms}").stop_after_ms, Some(1_500));
    assert_eq!(
        policy("{}").stop_after_ms,
        Some(5_000),
        "a mapping means stop"
    );
}

#[test]
fn bad_values_name_the_key_and_what_to_write() {
    let e = error("pause");
    assert!(
        e.contains("services.db.x-shoal-disconnect") && e.contains("unknown policy `pause`"),
        "{e}"
    );
    assert!(
        e.contains("use keep, stop or {stop_after: DURATION}"),
        "{e}"
    );
    assert!(e.starts_with("4:"), "line 4: {e}");

    let e = error("{stop_afterr: 2s}");
    assert!(
        e.contains("services.db.x-shoal-disconnect.stop_afterr")
            && e.contains("unknown x-shoal-disconnect key"),
        "{e}"
    );
    let e = error("{stop_after: soon}");
    assert!(
        e.contains("services.db.x-shoal-disconnect.stop_after"),
        "{e}"
    );
    let e = error("{stop_after: 0s}");
    assert!(e.contains("must be longer than 0s"), "{e}");
    let e = error("[stop]");
    assert!(e.contains("must be a word or a mapping"), "{e}");
}
