//! Standby copies of replicated volumes (`x-shoal-volume: {replicas}`): a refresh
//! recorded, and the promotion of the freshest standby when the live copy's node is
//! lost. The refreshes themselves run on the leader (`crate::transfers`).

use std::collections::{BTreeMap, BTreeSet};

use super::apply::CommandResult;
use super::model::ClusterState;
use super::volumes::{copy_key, CopyState, VolumeCopy};

impl ClusterState {
    /// A standby copy of `stack/name` on `node` was refreshed: the copy taken at `at_ms`
    /// is complete there.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn standby_synced(
        &mut self,
        stack: &str,
        name: &str,
        node: &str,
        bytes: u64,
        frozen_ms: u64,
        at_ms: u64,
        docker_name: &str,
    ) -> CommandResult {
        let live: Vec<&VolumeCopy> = self
            .copies_of(stack, name)
            .filter(|c| c.state == CopyState::Live)
            .collect();
        if live.len() != 1 || live[0].node == node {
            return CommandResult::error(format!(
                "{stack}/{name} no longer has one live copy elsewhere than {node}"
            ));
        }
        let key = copy_key(stack, name, node);
        match self.volumes.get(&key) {
            Some(c) if c.state != CopyState::Standby => {
                return CommandResult::error(format!(
                    "{node} holds a {} copy of {stack}/{name}",
                    c.state.as_str()
                ))
            }
            _ => {}
        }
        let primary = live[0].node.clone();
        let c = self.volumes.entry(key).or_insert_with(|| VolumeCopy {
            stack: stack.to_string(),
            name: name.to_string(),
            node: node.to_string(),
            docker_name: docker_name.to_string(),
            created_ms: at_ms,
            size_bytes: None,
            last_used_ms: 0,
            slots: BTreeMap::new(),
            state: CopyState::Standby,
            note: String::new(),
            seen: false,
            ephemeral: false,
            synced_ms: None,
            frozen_ms: None,
        });
        c.size_bytes = Some(bytes);
        c.synced_ms = Some(at_ms);
        c.frozen_ms = Some(frozen_ms);
        c.note = format!("standby of {primary}'s copy; replicas paused {frozen_ms} ms for it");
        CommandResult::default()
    }

    /// The live copy's node is lost: the standby on `node` becomes the live copy (with
    /// the slots of the lost one), and the lost node's copy is set aside, to be found
    /// so when the node returns.
    pub(super) fn promote_standby(
        &mut self,
        stack: &str,
        name: &str,
        node: &str,
        now_ms: u64,
    ) -> bool {
        let key = copy_key(stack, name, node);
        if self
            .volumes
            .get(&key)
            .is_none_or(|c| c.state != CopyState::Standby)
        {
            return false;
        }
        let lost: Vec<String> = self
            .copies_of(stack, name)
            .filter(|c| c.state == CopyState::Live)
            .map(|c| copy_key(stack, name, &c.node))
            .collect();
        let mut slots = BTreeMap::new();
        let mut from = Vec::new();
        for k in &lost {
            if let Some(c) = self.volumes.get_mut(k) {
                for (svc, s) in &c.slots {
                    slots
                        .entry(svc.clone())
                        .or_insert_with(BTreeSet::new)
                        .extend(s.iter().copied());
                }
                c.state = CopyState::SetAside;
                c.note = format!(
                    "stale: its replicas failed over to {node}'s standby at {now_ms} ms; kept, never merged (shoal volume rm {stack}/{name} --node {})",
                    c.node
                );
                from.push(c.node.clone());
            }
        }
        let Some(c) = self.volumes.get_mut(&key) else {
            return false;
        };
        let synced = c.synced_ms.unwrap_or(0);
        c.state = CopyState::Live;
        c.slots = slots;
        c.last_used_ms = now_ms;
        c.note = format!(
            "promoted from standby after {} was lost; its last copy was taken {} before (what was written since is on the old copy)",
            from.join(", "),
            crate::reconciler::human_ms(now_ms.saturating_sub(synced))
        );
        true
    }
}
