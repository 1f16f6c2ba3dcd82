//! Shared pieces of the single-node Raft tests (`raft_restart`, `raft_snapshots`).

use std::path::{Path, PathBuf};

use shoal_controller::raft::{self, RaftTimings};

/// The address the member advertises (nothing dials it: it is alone).
pub const ADDR: &str = "127.0.0.1:7370";

/// Short heartbeats and elections, so a lone member leads quickly.
pub fn timings() -> RaftTimings {
    RaftTimings {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        ..RaftTimings::default()
    }
}

/// Where the member's snapshot files are.
pub fn snapshot_dir(dir: &Path) -> PathBuf {
    dir.join("raft").join(raft::SNAPSHOT_DIR)
}

/// The names of the files in the snapshot dir, sorted.
pub fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(snapshot_dir(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
