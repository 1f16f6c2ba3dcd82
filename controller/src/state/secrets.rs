//! The secrets part of the state: sealed contents by digest, and the secrets the
//! cluster keeps by name (`shoal secret create`). Applied deterministically like the
//! rest of [`ClusterState::apply`].

use super::apply::CommandResult;
use super::model::*;

impl ClusterState {
    pub(super) fn create_secret(
        &mut self,
        name: &str,
        digest: &str,
        sealed: &SealedSecret,
        now_ms: u64,
    ) -> CommandResult {
        if self.cluster_secrets.contains_key(name) {
            return CommandResult::error(format!(
                "secret {name} already exists; a secret cannot be changed: create one under a new name and point the stack at it"
            ));
        }
        self.secrets.insert(digest.to_string(), sealed.clone());
        self.cluster_secrets.insert(
            name.to_string(),
            ClusterSecret {
                digest: digest.to_string(),
                created_ms: now_ms,
            },
        );
        CommandResult::default()
    }

    pub(super) fn remove_secret(&mut self, name: &str) -> CommandResult {
        if !self.cluster_secrets.contains_key(name) {
            return CommandResult::error(format!("no secret named {name}"));
        }
        let users = self.secret_users(name);
        if !users.is_empty() {
            return CommandResult::error(format!(
                "secret {name} is in use by {}: remove it from their stacks first",
                users.join(", ")
            ));
        }
        self.cluster_secrets.remove(name);
        self.prune_secrets();
        CommandResult::default()
    }

    /// Drop sealed secrets no service's spec (current or previous) refers to and the
    /// cluster does not keep by name.
    pub(super) fn prune_secrets(&mut self) {
        if self.secrets.is_empty() {
            return;
        }
        let used: std::collections::BTreeSet<&str> = self
            .services
            .values()
            .flat_map(|s| std::iter::once(&s.spec).chain(s.previous.as_ref()))
            .flat_map(|spec| spec.secrets.iter().chain(&spec.configs))
            .map(|r| r.digest.as_str())
            .chain(self.cluster_secrets.values().map(|c| c.digest.as_str()))
            .collect();
        self.secrets
            .retain(|digest, _| used.contains(digest.as_str()));
    }

    /// The services (`STACK/SERVICE`) whose spec or previous spec uses kept secret `name`.
    pub fn secret_users(&self, name: &str) -> Vec<String> {
        self.services
            .values()
            .filter(|s| {
                std::iter::once(&s.spec)
                    .chain(s.previous.as_ref())
                    .flat_map(|spec| &spec.secrets)
                    .any(|r| r.external.as_deref() == Some(name))
            })
            .map(|s| format!("{}/{}", s.stack, s.name))
            .collect()
    }
}
