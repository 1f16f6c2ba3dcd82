//! The CLI renews its admin certificate as nodes renew theirs: a controller issuing
//! 9-second certificates (`--cert-ttl`, hidden, for tests), and a CLI that keeps
//! working past the first certificate's expiry, while a copy of that first certificate
//! is refused once it has expired. No Docker needed: a controller alone.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use shoal_tests::{eventually, free_port, shoal_bin, text};

/// Kills the controller when the test ends, however it ends.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nodes(addr: &str, credentials: &Path) -> Output {
    Command::new(shoal_bin())
        .args(["nodes", "--format", "json", "--addr", addr, "--credentials"])
        .arg(credentials)
        .env_remove("SHOAL_CREDENTIALS")
        .stdin(Stdio::null())
        .output()
        .expect("run shoal")
}

fn cert(dir: &Path) -> (String, shoal_tls::identity::CertInfo) {
    let pem = std::fs::read_to_string(dir.join("cert.pem")).expect("cert.pem");
    let info = shoal_tls::identity::cert_info_pem(&pem).expect("a certificate");
    (pem, info)
}

fn sleep_until(t: SystemTime) {
    if let Ok(d) = t.duration_since(SystemTime::now()) {
        std::thread::sleep(d);
    }
}

#[test]
fn the_cli_renews_its_certificate_before_it_expires() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(tmp.path().join("controller.log")).unwrap();
    let _controller = Controller(
        Command::new(shoal_bin())
            .args([
                "controller",
                "--init",
                "--listen",
                &addr,
                "--cert-ttl",
                "9s",
            ])
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn the controller"),
    );
    let admin = data.join("admin");
    eventually(Duration::from_secs(30), "the controller answering", || {
        (admin.join("cert.pem").exists() && nodes(&addr, &admin).status.success()).then_some(())
    });
    let (first_pem, first) = cert(&admin);
    assert_eq!(first.identity.role, shoal_tls::Role::Admin);
    let old = tmp.path().join("old-admin");
    std::fs::create_dir_all(&old).unwrap();
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(admin.join(f), old.join(f)).unwrap();
    }

    // Two thirds into its life, the next command renews it.
    sleep_until(first.renew_at() + Duration::from_millis(500));
    let out = nodes(&addr, &admin);
    assert!(out.status.success(), "{}", text(&out));
    let (renewed_pem, renewed) = cert(&admin);
    assert_ne!(renewed_pem, first_pem, "the certificate was not renewed");
    assert!(renewed.not_after > first.not_after);
    assert_eq!(renewed.identity, first.identity);

    // Past the first certificate's expiry: the CLI still works, the old copy does not.
    sleep_until(first.not_after + Duration::from_secs(1));
    let out = nodes(&addr, &admin);
    assert!(out.status.success(), "{}", text(&out));
    let out = nodes(&addr, &old);
    assert!(!out.status.success(), "an expired certificate was answered");
}
