//! `shoal install` and `shoal uninstall`, run as the built binary: the files written
//! under `--root` (exact contents, modes), `systemd-analyze verify` on them, refusals,
//! and a machine without systemd (simulated with `SHOAL_SYSTEMD_RUN_DIR`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

fn shoal(args: &[&str]) -> Output {
    Command::new(SHOAL)
        .args(args)
        // The service must not depend on the installing shell's environment, and
        // neither may these tests.
        .env_remove("SHOAL_TOKEN")
        .env_remove("SHOAL_ADDR")
        .env_remove("SHOAL_SYSTEMD_RUN_DIR")
        .output()
        .expect("run the shoal binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn root_str(dir: &Path) -> &str {
    dir.to_str().expect("temporary directory path is UTF-8")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn install_with_root_writes_the_unit_and_env_file_with_the_flags_given() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_str(dir.path());
    let out = shoal(&[
        "install",
        "controller",
        "--root",
        root,
        "--advertise",
        "10.0.0.1:7370",
        "--join",
        "10.0.0.2:7370",
        "--token",
        "SHOAL-CTRL-1",
        "--image-retention",
        "12h",
    ]);
    let stdout = ok(&out);
    let unit = dir
        .path()
        .join("etc/systemd/system/shoal-controller.service");
    let env = dir.path().join("etc/shoal/controller.env");
    assert_eq!(
        std::fs::read_to_string(&unit).unwrap(),
        format!(
            "# Written by `shoal install controller`; `shoal uninstall controller` removes it.\n\
             # The flags are in /etc/shoal/controller.env (SHOAL_ARGS); edit them there, then\n\
             # `systemctl restart shoal-controller.service`.\n\
             [Unit]\n\
             Description=shoal controller (a member of the cluster's Raft group)\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             \n\
             [Service]\n\
             Type=exec\n\
             EnvironmentFile=/etc/shoal/controller.env\n\
             ExecStart={SHOAL} controller $SHOAL_ARGS\n\
             Restart=always\n\
             RestartSec=2\n\
             LimitNOFILE=1048576\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "# Written by `shoal install controller`: the flags of `shoal controller`, split at spaces.\n\
         SHOAL_ARGS=\"--data-dir /var/lib/shoal/controller --listen 0.0.0.0:7370 \
         --advertise 10.0.0.1:7370 --join 10.0.0.2:7370 --image-retention 12h\"\n\
         # The join token (--token), kept out of the command line.\n\
         SHOAL_TOKEN=\"SHOAL-CTRL-1\"\n"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env), 0o600, "the env file may hold a token");
    assert_eq!(mode(&unit), 0o644);
    assert_eq!(files_under(dir.path()), vec![env.clone(), unit.clone()]);
    assert!(
        stdout.contains(&format!("wrote {} (mode 0600)", env.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("systemctl was not run (--root)"),
        "{stdout}"
    );

    // The agent: --addr passes through, the unit never kills what the agent started.
    let out = shoal(&[
        "install",
        "agent",
        "--addr",
        "10.0.0.1:7370,10.0.0.2:7370",
        "--name",
        "node-a",
        "--labels",
        "zone=a",
        "--token=SHOAL-AGENT-1",
        "--root",
        root,
    ]);
    ok(&out);
    let unit =
        std::fs::read_to_string(dir.path().join("etc/systemd/system/shoal-agent.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={SHOAL} agent $SHOAL_ARGS\n")),
        "{unit}"
    );
    assert!(unit.contains("KillMode=process\n"), "{unit}");
    assert!(
        unit.contains("Wants=network-online.target docker.service\n"),
        "{unit}"
    );
    assert!(
        unit.contains("After=network-online.target docker.service\n"),
        "{unit}"
    );
    let env = std::fs::read_to_string(dir.path().join("etc/shoal/agent.env")).unwrap();
    assert!(
        env.contains(
            "SHOAL_ARGS=\"--data-dir /var/lib/shoal/agent --addr 10.0.0.1:7370,10.0.0.2:7370 \
             --name node-a --labels zone=a\"\n"
        ),
        "{env}"
    );
    assert!(env.contains("SHOAL_TOKEN=\"SHOAL-AGENT-1\"\n"), "{env}");
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.as_ref().is_ok_and(|o| o.status.success()),
        "systemd-analyze is needed for this test: install Debian's `systemd` package ({analyze:?})"
    );
    let dir = tempfile::tempdir().unwrap();
    let root = root_str(dir.path());
    ok(&shoal(&[
        "install",
        "controller",
        "--root",
        root,
        "--init",
        "--listen",
        "127.0.0.1:7370",
    ]));
    ok(&shoal(&[
        "install",
        "agent",
        "--root",
        root,
        "--addr",
        "127.0.0.1:7370",
        "--name",
        "n1",
    ]));
    for role in ["controller", "agent"] {
        let unit = dir
            .path()
            .join(format!("etc/systemd/system/shoal-{role}.service"));
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{role}: {stderr}");
        // verify exits 0 even for lines it ignores; any mention of the unit is a problem.
        assert!(
            !stderr.contains(&format!("shoal-{role}")),
            "systemd-analyze complained about {}:\n{stderr}",
            unit.display()
        );
    }
}

#[test]
fn a_bad_flag_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_str(dir.path());
    let cases: [(&[&str], &str); 6] = [
        (
            &["install", "controller", "--root", root, "--init", "--bogus"],
            "error: shoal install controller: unexpected argument '--bogus' found",
        ),
        (
            &["install", "controller", "--root", root, "--join", "a:7370"],
            "error: shoal install controller: --join needs --token T",
        ),
        (
            &[
                "install",
                "controller",
                "--root",
                root,
                "--init",
                "--heartbeat-ms",
                "x",
            ],
            "error: shoal install controller: invalid value 'x' for '--heartbeat-ms <MS>'",
        ),
        (
            &["install", "agent", "--root", root, "--name", "n1"],
            "error: shoal install agent: --addr ADDR[,ADDR..] is needed",
        ),
        (
            &[
                "install",
                "agent",
                "--root",
                root,
                "--addr",
                "a:1",
                "--data-dir",
                "rel/dir",
            ],
            "error: shoal install agent: rel/dir is a relative path",
        ),
        (
            &["install", "nothing", "--root", root],
            "error: shoal install: `nothing` is not a role",
        ),
    ];
    for (args, says) in cases {
        let out = shoal(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with(says), "{args:?}: {stderr}");
    }
    assert!(files_under(dir.path()).is_empty());
}

#[test]
fn without_systemd_nothing_is_written_and_the_unit_is_shown() {
    let unit = Path::new("/etc/systemd/system/shoal-agent.service");
    let env = Path::new("/etc/shoal/agent.env");
    let before = (unit.exists(), env.exists());
    let out = Command::new(SHOAL)
        .args([
            "install",
            "agent",
            "--addr",
            "10.0.0.1:7370",
            "--name",
            "n1",
            "--token",
            "T1",
        ])
        .env("SHOAL_SYSTEMD_RUN_DIR", "/nonexistent/shoal-test/systemd")
        .env_remove("SHOAL_TOKEN")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: systemd is not running on this machine: run `SHOAL_TOKEN=T1 {SHOAL} agent --data-dir \
             /var/lib/shoal/agent --addr 10.0.0.1:7370 --name n1` under your service \
             manager; the unit shoal would install is:\n\n\
             # /etc/systemd/system/shoal-agent.service\n"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("ExecStart={SHOAL} agent $SHOAL_ARGS\n")),
        "{stderr}"
    );
    assert!(stderr.contains("# /etc/shoal/agent.env\n"), "{stderr}");
    assert_eq!(
        (unit.exists(), env.exists()),
        before,
        "nothing may be written"
    );
}

#[test]
fn dry_run_prints_the_files_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_str(dir.path());
    let stdout = ok(&shoal(&[
        "install",
        "--dry-run",
        "controller",
        "--root",
        root,
        "--init",
        "--advertise",
        "h:7370",
    ]));
    assert!(
        stdout.starts_with(&format!(
            "# {root}/etc/systemd/system/shoal-controller.service\n# Written by"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("--listen 0.0.0.0:7370 --init --advertise h:7370\"\n"),
        "{stdout}"
    );
    assert!(files_under(dir.path()).is_empty());
}

#[test]
fn uninstall_with_root_removes_exactly_the_installed_files_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_str(dir.path());
    let data = dir.path().join("srv/agent");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("state"), "x").unwrap();
    let other = dir.path().join("etc/shoal/other.conf");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, "y").unwrap();
    ok(&shoal(&[
        "install",
        "agent",
        "--root",
        root,
        "--addr",
        "a:7370",
        "--name",
        "n1",
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    ok(&shoal(&[
        "install",
        "controller",
        "--root",
        root,
        "--init",
        "--advertise",
        "h:7370",
    ]));
    assert_eq!(files_under(dir.path()).len(), 6);

    let stdout = ok(&shoal(&["uninstall", "agent", "--root", root]));
    assert_eq!(
        files_under(dir.path()),
        vec![
            dir.path().join("etc/shoal/controller.env"),
            other.clone(),
            dir.path()
                .join("etc/systemd/system/shoal-controller.service"),
            data.join("state"),
        ]
    );
    assert!(
        stdout.contains(&format!("kept the agent's data in {}", data.display())),
        "{stdout}"
    );
    assert!(
        !stdout.contains("systemctl"),
        "no systemctl with --root: {stdout}"
    );

    // Both (the default): the agent is gone already and says so.
    let stdout = ok(&shoal(&["uninstall", "--root", root]));
    assert!(
        stdout.contains("shoal-agent.service is not installed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("kept the controller's data in /var/lib/shoal/controller"),
        "{stdout}"
    );
    assert_eq!(files_under(dir.path()), vec![other, data.join("state")]);
}
