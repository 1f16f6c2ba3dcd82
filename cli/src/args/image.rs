//! `shoal image ...`: the cluster's image store.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Copy images from this machine's Docker engine to the cluster's store (only the
    /// layers the store lacks are sent), e.g. images built in CI.
    Push {
        /// Images as the engine names them (`REPO:TAG`).
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// List the images of the cluster's store and those services use: size, the nodes
    /// whose engines hold them, the services running them, the controllers storing them.
    Ls,
    /// Forget an image of the cluster's store (refused while a service uses it).
    Rm {
        /// The image (see `shoal image ls`).
        image: String,
    },
}
