//! Task states, shared by the controller (which records them) and the agent (which
//! observes them).

use serde::{Deserialize, Serialize};

/// The observed state of a task. See DESIGN.md for the contract strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Not placed yet (no node fits, or a dependency is not met).
    Pending,
    /// Placed on a node; its agent has not reported it yet.
    Assigned,
    /// The agent is pulling the image or creating the container.
    Starting,
    /// The container runs (and has no healthcheck, or it has not passed yet).
    Running,
    Healthy,
    Unhealthy,
    /// The container exited 0.
    Complete,
    /// The container exited non-zero, or could not be created or started.
    Failed,
    /// Stopped because it was asked to.
    Shutdown,
    /// Its node was lost.
    Orphaned,
}

impl TaskState {
    pub const ALL: [TaskState; 10] = [
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Healthy,
        TaskState::Unhealthy,
        TaskState::Complete,
        TaskState::Failed,
        TaskState::Shutdown,
        TaskState::Orphaned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Healthy => "healthy",
            TaskState::Unhealthy => "unhealthy",
            TaskState::Complete => "complete",
            TaskState::Failed => "failed",
            TaskState::Shutdown => "shutdown",
            TaskState::Orphaned => "orphaned",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The task will not run again: its container is gone or exited.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Complete | TaskState::Failed | TaskState::Shutdown | TaskState::Orphaned
        )
    }

    /// A container exists and runs.
    pub fn is_up(self) -> bool {
        matches!(
            self,
            TaskState::Running | TaskState::Healthy | TaskState::Unhealthy
        )
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What should happen to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Shutdown,
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Shutdown => "shutdown",
        }
    }

    pub fn parse(s: &str) -> Option<Desired> {
        match s {
            "running" => Some(Desired::Running),
            "shutdown" => Some(Desired::Shutdown),
            _ => None,
        }
    }
}
