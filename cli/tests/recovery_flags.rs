//! `shoal cluster backup`, `--restore` and `--force-new-cluster` refuse bad input before
//! they touch a cluster or a data dir (exit 2, saying what is wrong).

use std::process::{Command, Output, Stdio};

/// `shoal ARGS`, killed after 20 s: a command that should refuse but starts a
/// controller instead must fail the test, not hang it.
fn shoal(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .env_remove("SHOAL_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait for shoal").is_none() {
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("shoal output")
}

fn refused(args: &[&str], says: &str) {
    let out = shoal(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?} should say {says:?}: {err}");
}

#[test]
fn a_backup_needs_a_passphrase_of_eight_characters() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b").display().to_string();
    // No terminal to ask at, and no file: refused before the cluster is contacted.
    refused(
        &["cluster", "backup", &file, "--addr", "127.0.0.1:1"],
        "give --passphrase-file F",
    );
    let short = dir.path().join("short");
    std::fs::write(&short, "1234567\n").unwrap();
    refused(
        &[
            "cluster",
            "backup",
            &file,
            "--passphrase-file",
            &short.display().to_string(),
            "--addr",
            "127.0.0.1:1",
        ],
        "too short",
    );
    refused(
        &[
            "cluster",
            "backup",
            &file,
            "--passphrase-file",
            "/nonexistent/pass",
            "--addr",
            "127.0.0.1:1",
        ],
        "cannot read the passphrase file /nonexistent/pass",
    );
    assert!(!dir.path().join("b").exists(), "nothing written");
}

/// `shoal controller --data-dir D --listen 127.0.0.1:0 FLAGS..`.
fn controller<'a>(d: &'a str, flags: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["controller", "--data-dir", d, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    args
}

#[test]
fn recovery_flags_are_checked_against_the_data_dir_and_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    refused(
        &controller(&d, &["--force-new-cluster"]),
        "holds no controller",
    );
    refused(
        &controller(&d, &["--restore", "f", "--init"]),
        "cannot be used with",
    );
    refused(
        &controller(&d, &["--init", "--passphrase-file", "p"]),
        "--restore",
    );
    let missing = dir.path().join("missing.backup").display().to_string();
    let out = shoal(&controller(&d, &["--restore", &missing]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot read the backup {missing}")),
        "{err}"
    );
    assert!(!dir.path().join("node-id").exists(), "nothing written");
}
