//! Building openraft's `StorageError` with the data dir named in the message, so an
//! operator reading the log knows which directory is at fault.

use std::fmt::Display;
use std::path::Path;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

use super::RaftNodeId;

pub(crate) type StorageResult<T> = Result<T, StorageError<RaftNodeId>>;

/// `what` went wrong while `verb`-ing `subject` in the raft store of `dir`.
pub(crate) fn storage_err(
    subject: ErrorSubject<RaftNodeId>,
    verb: ErrorVerb,
    dir: &Path,
    what: impl Display,
) -> StorageError<RaftNodeId> {
    let msg = format!("raft store in {}: {what}", dir.display());
    StorageIOError::new(subject, verb, AnyError::error(msg)).into()
}
