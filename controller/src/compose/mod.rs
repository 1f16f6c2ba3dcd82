//! The Compose loader: Compose files in, a normalized [`StackSpec`] out.
//!
//! It runs client-side (the CLI calls [`load`] for `shoal deploy` and `shoal config`),
//! so it reads files and takes the process environment as an input. The pipeline:
//!
//! - [`yaml`]: parse into a tree that keeps positions; anchors and `<<` merge keys applied.
//! - [`interpolate`] + [`dotenv`]: `${VAR}` forms against the environment over `.env`.
//! - [`schema`]: the Compose Specification's schema, so unknown keys and wrong types are
//!   errors with file:line (and a suggestion for typos).
//! - `files`: `include` and `extends`; [`merge`]: several `-c` files in order.
//! - `stack`: project name, profiles, top-level volumes, depends_on checks; `networks`:
//!   top-level networks and each service's attachments; `service` /
//!   `deploy` / `update`: each service key honored, ignored with a warning, or refused;
//!   `build`: `build:` (what the deploying machine builds) and `pull_policy`;
//!   `autoscale`: `x-shoal-autoscale` (bounds, metrics, and the starting count).
//! - [`render`]: the normalized model and the per-key table for `shoal config`.
//!
//! It must not talk to the cluster: it only turns text into a spec or into diagnostics.

mod autoscale;
mod build;
mod container;
mod deploy;
mod diag;
mod disconnect;
mod dotenv;
mod files;
pub mod interpolate;
pub mod merge;
mod mounts;
mod networks;
mod ports;
mod render;
pub mod schema;
mod secrets;
mod service;
mod stack;
pub mod units;
mod update;
mod value;
mod volume_policy;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::PathBuf;

use shoal_proto::spec::StackSpec;

pub use deploy::parse_constraint;
pub use diag::{Diagnostic, LoadError, Severity};
pub use render::render;
pub use secrets::{
    config_contents, contents as secret_contents, SecretSource, SourceKind, MAX_SECRET_BYTES,
};
pub use stack::load;

/// What to load, as the CLI was asked.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `-c FILE..` in order; empty: `compose.yaml`, `compose.yml`, `docker-compose.yaml`
    /// or `docker-compose.yml` in the current directory.
    pub files: Vec<PathBuf>,
    /// `--stack NAME`: overrides `name:` and the directory name.
    pub project_name: Option<String>,
    /// `--profile`.
    pub profiles: Vec<String>,
    /// The process environment (the CLI passes `std::env::vars()`).
    pub env: BTreeMap<String, String>,
}

/// A loaded stack, with the warnings found and what happened to each key.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub stack: StackSpec,
    /// Warnings only: with any error, [`load`] returns [`LoadError`] instead.
    pub diagnostics: Vec<Diagnostic>,
    pub keys: Vec<KeyReport>,
    /// Where each top-level secret's contents come from; [`secret_contents`] reads them.
    pub secret_sources: BTreeMap<String, SecretSource>,
    /// The same for configs ([`config_contents`]).
    pub config_sources: BTreeMap<String, SecretSource>,
}

/// What shoal does with one key of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReport {
    pub service: String,
    /// A service key (`ports`) or a `deploy.` sub-key (`deploy.replicas`).
    pub key: String,
    pub disposition: Disposition,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Honored,
    /// Accepted and not acted on, with the reason shown to the user.
    Ignored(String),
}
