//! Raft: openraft 0.9 with storage-v2 on sled. Owned by the raft storage work.
