//! openraft's own storage conformance suite against shoal's sled log store and state
//! machine (the real `TypeConfig`, the real code path), each test on a fresh temp dir.

use openraft::testing::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use shoal_controller::raft::{LogStore, StateMachine, TypeConfig};
use tempfile::TempDir;

struct SledBuilder;

fn storage_error(e: anyhow::Error) -> StorageError<u64> {
    StorageIOError::new(
        ErrorSubject::Store,
        ErrorVerb::Read,
        openraft::AnyError::error(format!("{e:#}")),
    )
    .into()
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = TempDir::new().expect("temp dir");
        let db = sled::open(dir.path().join("raft")).map_err(|e| storage_error(e.into()))?;
        let log = LogStore::open(&db, dir.path()).map_err(storage_error)?;
        let sm = StateMachine::open(&db, dir.path()).map_err(storage_error)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(SledBuilder) {
        panic!("storage suite: {e}");
    }
}
