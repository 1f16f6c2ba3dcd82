//! Images on the deploying machine (issue 13): what `shoal deploy` and `shoal image push`
//! do with this machine's Docker engine before anything reaches the cluster.
//!
//! - [`engine`]: the connection to the engine (`DOCKER_HOST`, else the default socket),
//!   at API 1.41 (Docker 20.10), opened only when a command needs it.
//! - [`dockerignore`] and [`context`]: the build context as the tar `docker build`
//!   sends, `.dockerignore` honoured.
//! - [`build`]: the classic builder, its output streamed to stderr, the result tagged
//!   with its content-derived reference.
//! - [`save`]: `docker save` of one image, read into blobs named by their digests
//!   (uncompressed layer tars by diff id, the config by the image id).
//! - [`push`]: the blobs the cluster's store lacks, sent to the leader (`ImagePush`).
//! - [`available`]: what a deploy must do for each image (pure).
//! - [`deploy`]: the image steps `shoal deploy` runs before it sends the stack.
//!
//! Nothing here keeps state between commands: the engine and the cluster's store are
//! the only places images live.

pub mod available;
pub mod build;
pub mod context;
pub mod deploy;
pub mod dockerignore;
pub mod engine;
pub mod push;
pub mod save;

#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod tests;
