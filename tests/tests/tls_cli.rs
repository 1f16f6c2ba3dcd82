//! The CLI's credentials end to end: `shoal up` writes admin credentials and points the
//! local CLI at them; without them the CLI says what to do; `shoal login` saves a
//! cluster and credentials; `shoal token show|rotate`; credentials of another cluster
//! are refused at the handshake. Needs Docker (for `shoal up`'s agent).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use shoal_tests::*;

/// `shoal ARGS` with `XDG_CONFIG_HOME` at `config_home` and no SHOAL_CREDENTIALS.
fn shoal_with(config_home: &Path, args: &[&str]) -> Output {
    Command::new(shoal_bin())
        .args(args)
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("SHOAL_CREDENTIALS")
        .env_remove("SHOAL_ADDR")
        .stdin(Stdio::null())
        .output()
        .expect("run shoal")
}

#[test]
fn cli_credentials_login_and_tokens() {
    let up = ShoalUp::start("tls-cli-node");
    let admin = up.data_dir.join("controller").join("admin");
    let admin_s = admin.to_str().unwrap();

    // `shoal up` configured its own CLI: no flags but --addr needed.
    let out = up.shoal(&["nodes", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));

    // A CLI with no config and no --credentials says what to do.
    let empty = tempfile::tempdir().unwrap();
    let out = shoal_with(empty.path(), &["nodes", "--addr", &up.addr]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no credentials found"), "{}", text(&out));
    assert!(err.contains("--credentials DIR"), "{}", text(&out));

    // --credentials works without a config.
    let out = shoal_with(
        empty.path(),
        &["nodes", "--addr", &up.addr, "--credentials", admin_s],
    );
    assert!(out.status.success(), "{}", text(&out));

    // login checks and saves; later commands need no flags at all.
    let home = tempfile::tempdir().unwrap();
    let out = shoal_with(
        home.path(),
        &["login", "--addr", &up.addr, "--credentials", admin_s],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(home.path().join("shoal/config").exists());
    let out = shoal_with(home.path(), &["nodes", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tls-cli-node"),
        "{}",
        text(&out)
    );

    // Tokens pin the CA the admin credentials trust.
    let ca_pem = std::fs::read_to_string(admin.join("ca.pem")).unwrap();
    let ca = shoal_tls::parse_certs(&ca_pem).unwrap();
    let digest = shoal_tls::token::ca_digest(&ca[0]);
    let show = |role: &str| {
        let out = shoal_with(home.path(), &["token", "show", role]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let agent = show("agent");
    let controller = show("controller");
    assert!(agent.starts_with(&format!("SHOAL-1-{digest}-")), "{agent}");
    assert!(
        controller.starts_with(&format!("SHOAL-1-{digest}-")),
        "{controller}"
    );
    assert_ne!(agent, controller);
    let out = shoal_with(home.path(), &["token", "rotate", "agent"]);
    assert!(out.status.success(), "{}", text(&out));
    let rotated = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_ne!(rotated, agent);
    assert_eq!(show("agent"), rotated);
    assert_eq!(
        show("controller"),
        controller,
        "rotating one role keeps the other"
    );

    // The agent's certificate cannot administer.
    let agent_creds = up.data_dir.join("agent").join("tls");
    let out = shoal_with(
        empty.path(),
        &[
            "nodes",
            "--addr",
            &up.addr,
            "--credentials",
            agent_creds.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a agent certificate may not call this API"),
        "{}",
        text(&out)
    );

    // Credentials of another cluster: refused, and said so.
    let other = shoal_controller::pki::ClusterCa::generate().unwrap();
    let (cert_pem, key_pem) = other
        .issue_with_key(
            &shoal_tls::Identity::new(shoal_tls::Role::Admin, "admin"),
            &[],
            std::time::SystemTime::now(),
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let foreign = tempfile::tempdir().unwrap();
    shoal_tls::CredentialFiles {
        ca_pem: other.cert_pem().to_string(),
        cert_pem,
        key_pem,
    }
    .store(foreign.path())
    .unwrap();
    let out = shoal_with(
        empty.path(),
        &[
            "nodes",
            "--addr",
            &up.addr,
            "--credentials",
            foreign.path().to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("are these credentials for this cluster"),
        "{}",
        text(&out)
    );
}
