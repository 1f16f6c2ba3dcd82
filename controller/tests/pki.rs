//! The cluster CA, sealing and the PKI record, without a network.

use std::time::{Duration, SystemTime};

use shoal_controller::pki::{ClusterCa, ClusterKey, PkiRecord};
use shoal_tls::identity::cert_info_pem;
use shoal_tls::{Identity, Role};

#[test]
fn a_csr_is_signed_with_the_name_the_ca_chooses() {
    let ca = ClusterCa::generate().unwrap();
    let (_key, csr) = shoal_tls::csr::new_key_and_csr().unwrap();
    let who = Identity::new(Role::Agent, "node-7");
    let ttl = Duration::from_secs(600);
    let pem = ca.issue_for_csr(&csr, &who, &[], ttl).unwrap();
    let info = cert_info_pem(&pem).unwrap();
    assert_eq!(info.identity, who);
    let life = info.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(
        life <= ttl && life > ttl - Duration::from_secs(5),
        "{life:?}"
    );
    // Renewal is due two thirds into the lifetime (counted from the backdated start).
    assert!(info.renew_at() < info.not_after && info.renew_at() > info.not_before);

    let err = ca
        .issue_for_csr(b"junk", &who, &[], ttl)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("certificate signing request is not valid"),
        "{err}"
    );
}

#[test]
fn a_ca_restored_from_pem_signs_certificates_its_original_verifies() {
    let ca = ClusterCa::generate().unwrap();
    let restored = ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(restored.digest(), ca.digest());
    let (cert, _) = restored
        .issue_with_key(
            &Identity::new(Role::Controller, "10.0.0.1:7370"),
            &["10.0.0.1".into(), "localhost".into()],
            SystemTime::now(),
            Duration::from_secs(60),
        )
        .unwrap();
    // rustls' verifier, with the original CA certificate as the only root.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(shoal_tls::parse_certs(ca.cert_pem()).unwrap().remove(0))
        .unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        shoal_tls::provider(),
    )
    .build()
    .unwrap();
    let leaf = shoal_tls::parse_certs(&cert).unwrap().remove(0);
    let name = rustls::pki_types::ServerName::try_from("10.0.0.1").unwrap();
    rustls::client::danger::ServerCertVerifier::verify_server_cert(
        verifier.as_ref(),
        &leaf,
        &[],
        &name,
        &[],
        rustls::pki_types::UnixTime::now(),
    )
    .expect("the restored CA's certificate verifies against the original");
}

#[test]
fn sealed_values_open_only_with_the_same_cluster_key() {
    let key = ClusterKey::generate().unwrap();
    let sealed = key.seal(b"the CA key").unwrap();
    assert!(!sealed.windows(10).any(|w| w == b"the CA key"));
    assert_eq!(key.open(&sealed).unwrap(), b"the CA key");
    let other = ClusterKey::generate().unwrap();
    let err = other.open(&sealed).unwrap_err().to_string();
    assert!(err.contains("cluster.key is not the cluster's"), "{err}");
    let mut damaged = sealed.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    assert!(key.open(&damaged).is_err());
    assert!(key.open(&sealed[..5]).is_err());
}

#[test]
fn the_cluster_key_file_round_trips_privately() {
    let dir = tempfile::tempdir().unwrap();
    assert!(ClusterKey::load(dir.path()).unwrap().is_none());
    let key = ClusterKey::generate().unwrap();
    key.store(dir.path()).unwrap();
    let back = ClusterKey::load(dir.path()).unwrap().unwrap();
    assert_eq!(back.bytes(), key.bytes());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("cluster.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::write(dir.path().join("cluster.key"), b"short").unwrap();
    let err = format!("{:#}", ClusterKey::load(dir.path()).unwrap_err());
    assert!(err.contains("cluster.key is damaged"), "{err}");
}

#[test]
fn tokens_pin_the_ca_and_rotation_changes_only_one_role() {
    let ca = ClusterCa::generate().unwrap();
    let key = ClusterKey::generate().unwrap();
    let record = PkiRecord::new(&ca, &key).unwrap();
    let agent = record.token(Role::Agent, &key).unwrap();
    let controller = record.token(Role::Controller, &key).unwrap();
    assert_eq!(agent.digest, ca.digest());
    assert_ne!(agent.secret, controller.secret);
    assert!(record.token(Role::Admin, &key).is_err());

    let rotated = record.rotated(Role::Agent, &key).unwrap();
    assert_ne!(rotated.token(Role::Agent, &key).unwrap(), agent);
    assert_eq!(rotated.token(Role::Controller, &key).unwrap(), controller);
    // The CA key comes back out of the record.
    assert_eq!(rotated.ca(&key).unwrap().digest(), ca.digest());
    // Nothing secret is in the record in clear.
    let json = serde_json::to_string(&rotated).unwrap();
    assert!(!json.contains(&agent.secret) && !json.contains(&controller.secret));
}
