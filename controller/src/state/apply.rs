use serde::{Deserialize, Serialize};

use super::model::*;

/// The answer to a committed command, returned to whoever proposed it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// For `DeployStack`: (service, generation, changed) per service.
    #[serde(default)]
    pub generations: Vec<(String, u64, bool)>,
    /// A command that was valid when proposed but not when applied (e.g. unknown service).
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub count: u64,
}

impl ClusterState {
    /// Applies one committed command. Deterministic: no clock, no I/O.
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        let _ = cmd;
        CommandResult::default()
    }
}
