//! Images from the cluster's store on a node (the fake runtime stands in for the engine,
//! checking loads as Docker's legacy loader does): only the missing layers are sent,
//! `pull_policy`, one load per image at a time, refused blobs, every layer for
//! containerd's image store, the gRPC source against a stand-in `ImageStore`, the image
//! report on the session, and removing the images the agent loaded once unused.

#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;

mod archive;
mod docker;
mod ensure;
mod grpc;
mod prune;
mod report;
mod store;
