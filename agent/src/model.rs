//! The agent's own words for what the controller asks and what the agent reports.
//! [`crate::convert`] translates them from and to the wire types.

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_proto::spec::ServiceSpec;
use shoal_proto::task::{Desired, TaskState};

use crate::runtime::TaskIdentity;

/// One task the controller assigned to this node.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub task: TaskIdentity,
    pub desired: Desired,
    /// The task ended: never (re)start it, whatever is left of its container.
    pub ended: bool,
    /// Shared: many replicas of one service carry the same spec.
    pub spec: Arc<ServiceSpec>,
    /// UUIDs of the GPUs the scheduler gave this task (empty: none).
    pub gpus: Vec<String>,
}

/// The full set of tasks assigned to this node; anything else must not run here.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AssignmentSet {
    pub version: u64,
    /// By task id.
    pub tasks: BTreeMap<String, Assignment>,
}

/// An observed state of one task, as reported to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskReport {
    pub task_id: String,
    pub state: TaskState,
    pub container_id: Option<String>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
}

impl TaskReport {
    pub fn new(task_id: &str, state: TaskState) -> TaskReport {
        TaskReport {
            task_id: task_id.to_string(),
            state,
            container_id: None,
            exit_code: None,
            error: None,
        }
    }

    pub fn container(mut self, id: Option<&str>) -> TaskReport {
        self.container_id = id.map(str::to_string);
        self
    }

    pub fn error(mut self, error: impl Into<String>) -> TaskReport {
        self.error = Some(error.into());
        self
    }

    pub fn exit_code(mut self, code: i64) -> TaskReport {
        self.exit_code = Some(code);
        self
    }
}

/// The controller wants the output of some tasks' containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRequest {
    pub request_id: u64,
    pub task_ids: Vec<String>,
    pub follow: bool,
    /// `None`: everything.
    pub tail: Option<u64>,
}

/// One chunk of a task's output, tagged with the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub request_id: u64,
    pub task_id: String,
    pub data: bytes::Bytes,
    pub stderr: bool,
    /// The last chunk of this task for this request.
    pub eof: bool,
    pub error: Option<String>,
}

/// What the controller says on the session.
#[derive(Debug, Clone, PartialEq)]
pub enum ControllerEvent {
    Assignments(AssignmentSet),
    Logs(LogRequest),
    CancelLogs(u64),
}
