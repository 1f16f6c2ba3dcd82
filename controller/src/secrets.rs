//! Compose secrets (and configs, which take the same path) on the controller: sealed
//! with the cluster key before they enter the Raft log, unsealed only into the
//! assignments of the node that runs a task using them.
//!
//! A secret is known by a keyed digest of its contents (HMAC-SHA256 under the cluster
//! key), written into each `SecretRef` of the spec: changed contents change the spec,
//! so the services that use it roll out, and a rollback finds the previous contents by
//! the previous spec's digest. Being keyed, the digest says nothing about a guessable
//! secret to whoever reads the state without the key.

use std::collections::{BTreeMap, HashMap};

use ring::hmac;
use shoal_proto::pb;
use shoal_proto::spec::StackSpec;

use crate::pki::ClusterKey;
use crate::state::{ClusterSecret, ClusterState, SealedSecret};

/// The keyed digest of `contents`.
pub fn digest(key: &ClusterKey, contents: &[u8]) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.bytes());
    hex::encode(hmac::sign(&k, contents).as_ref())
}

/// Check that every secret and config the spec's services use came with contents,
/// stamp each `SecretRef` with its digest, and seal the contents. An error says what
/// is missing.
pub fn seal_stack(
    spec: &mut StackSpec,
    secrets: &HashMap<String, Vec<u8>>,
    configs: &HashMap<String, Vec<u8>>,
    kept: &BTreeMap<String, ClusterSecret>,
    key: &ClusterKey,
) -> Result<BTreeMap<String, SealedSecret>, String> {
    let mut sealed = BTreeMap::new();
    for (name, svc) in spec.services.iter_mut() {
        for (refs, contents, noun) in [
            (&mut svc.secrets, secrets, "secret"),
            (&mut svc.configs, configs, "config"),
        ] {
            for r in refs.iter_mut() {
                // `external: true`: the cluster's own secret of that name.
                if let Some(ext) = &r.external {
                    let Some(c) = kept.get(ext) else {
                        return Err(format!(
                            "service {name} uses external secret {ext}, which the cluster does not have: create it with `shoal secret create {ext} FILE`"
                        ));
                    };
                    r.digest = c.digest.clone();
                    continue;
                }
                let Some(bytes) = contents.get(&r.source) else {
                    return Err(format!(
                        "service {name} uses {noun} {} but the request carries no contents for it (deploy with a shoal CLI of this version)",
                        r.source
                    ));
                };
                let d = digest(key, bytes);
                if !sealed.contains_key(&d) {
                    let s = key
                        .seal(bytes)
                        .map_err(|e| format!("seal {noun} {}: {e}", r.source))?;
                    sealed.insert(d.clone(), SealedSecret(s));
                }
                r.digest = d;
            }
        }
    }
    Ok(sealed)
}

/// The files of a task's secrets and configs, with their contents, for its node's agent.
pub fn files(
    state: &ClusterState,
    spec: &shoal_proto::spec::ServiceSpec,
    key: &ClusterKey,
) -> Vec<pb::SecretFile> {
    spec.secrets
        .iter()
        .chain(&spec.configs)
        .map(|r| {
            let (data, error) = match state.secrets.get(&r.digest) {
                Some(sealed) => match key.open(&sealed.0) {
                    Ok(d) => (d, String::new()),
                    Err(e) => (Vec::new(), format!("secret {}: {e}", r.source)),
                },
                None => (
                    Vec::new(),
                    format!(
                        "secret {}: its contents are not in the cluster state",
                        r.source
                    ),
                ),
            };
            pb::SecretFile {
                name: r.source.clone(),
                path: r.path(),
                uid: r.uid,
                gid: r.gid,
                mode: r.mode,
                data,
                error,
            }
        })
        .collect()
}

/// A name `shoal secret create` accepts: what Docker accepts for secret names.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a secret name: use up to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}
