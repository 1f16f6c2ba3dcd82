//! What [`super::Images::ensure`] answers: how the image came to be present, or why it
//! could not be (the text becomes the task's error, so it says what to do).

/// Why a task's image could not be made present; the text is the task's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnsureError {
    #[error("image {image} is not on this node's engine nor in the cluster's store (pull_policy: never)")]
    Never { image: String },
    #[error("image {image} is not on this node's engine, and the cluster's store could not be asked: {store} (pull_policy: never)")]
    NeverUnasked { image: String, store: String },
    /// `hint` says what the cluster's store had to say, if anything.
    #[error("pull image {image}: {reason}{hint}")]
    Pull {
        image: String,
        reason: String,
        hint: String,
    },
    #[error("load image {image} from the cluster's store: {reason}")]
    Load { image: String, reason: String },
    #[error("look for image {image} on the engine: {reason}")]
    Engine { image: String, reason: String },
}

/// How the image came to be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The engine had it.
    Present,
    /// Pulled from its registry.
    Pulled,
    /// Loaded from the cluster's store: `layers_sent` of its `layers` crossed the wire.
    Loaded {
        layers_sent: usize,
        layers: usize,
        bytes: u64,
    },
}
