//! Reading a stopped member's data dir whole, and setting its Raft store aside: what
//! `--force-new-cluster` starts a new one-member group from.
//!
//! Like etcd's `--force-new-cluster`, every entry in the survivor's log is taken, also
//! those it did not know were committed: an entry the lost majority committed may be
//! among them, and an entry that was never committed was at worst a write its client
//! saw fail or time out.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use openraft::storage::RaftLogReader;

use super::state_machine::Applied;
use super::{LogStore, StateMachine};

/// Everything the member in `data_dir` holds: its latest snapshot with every entry of
/// its log after it applied. The data dir must not be open (its controller stopped).
pub async fn read_offline(data_dir: &Path) -> anyhow::Result<Applied> {
    let db_path = data_dir.join("raft");
    anyhow::ensure!(
        db_path.is_dir(),
        "{} holds no Raft store: it is not a controller's data dir",
        data_dir.display()
    );
    let db = sled::Config::new()
        .path(&db_path)
        .open()
        .with_context(|| {
            format!(
                "open the raft store {} (if it is locked, a shoal controller still runs on this data dir: stop it first)",
                db_path.display()
            )
        })?;
    let mut log = LogStore::open(&db, data_dir)?;
    let mut applied = StateMachine::open(&db, data_dir)?.handle().applied();
    let next = applied.last_applied.map_or(0, |l| l.index + 1);
    let entries = log
        .try_get_log_entries(next..)
        .await
        .map_err(|e| anyhow::anyhow!("read the raft log in {}: {e}", data_dir.display()))?;
    let mut taken = 0usize;
    for entry in entries {
        applied.apply_entry(entry);
        taken += 1;
    }
    drop(log);
    db.flush().context("flush the raft store")?;
    tracing::info!(
        dir = %data_dir.display(),
        entries = taken,
        last = ?applied.last_applied,
        "read the data dir's state"
    );
    Ok(applied)
}

/// Renames `data_dir/raft` to `data_dir/raft.before-force-new-cluster-MS`, so a new
/// group can start in the data dir while nothing of the old one is lost. Returns where
/// it went.
pub fn set_aside(data_dir: &Path, now_ms: u64) -> anyhow::Result<PathBuf> {
    let from = data_dir.join("raft");
    let to = data_dir.join(format!("raft.before-force-new-cluster-{now_ms}"));
    std::fs::rename(&from, &to)
        .with_context(|| format!("move {} to {}", from.display(), to.display()))?;
    Ok(to)
}
