//! Images from the cluster's store on a node (the fake runtime stands in for the engine,
//! checking loads as Docker's legacy loader does): only the missing layers are sent,
//! `pull_policy`, one load per image at a time, refused blobs, the gRPC source against a
//! stand-in `ImageStore`, and the image report on the session.

#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;

mod archive;
mod docker;
mod ensure;
mod grpc;
mod report;
mod store;
