//! The cluster's PKI: a CA whose key lives in the Raft state sealed with the cluster
//! key that only controllers hold, join tokens, certificates issued for CSRs, and the
//! TLS listener every gRPC service is served behind.
//!
//! - [`ca`]: make the CA; issue certificates naming `shoal://ROLE/NAME`.
//! - [`seal`]: the cluster key (`DATA_DIR/cluster.key`) and sealing.
//! - [`record`]: what the Raft state holds ([`PkiRecord`]).
//! - [`local`]: this controller's own credentials: created at `--init`, obtained at
//!   `--join`, renewed before they expire.
//! - [`listener`]: the TLS listener (client certificates optional at the handshake).
//! - [`auth`]: roles, enforced per service from the client certificate.
//! - [`service`]: the `Pki` gRPC service (join, renew, tokens).

pub mod auth;
pub mod ca;
pub mod listener;
pub mod local;
pub mod record;
pub mod seal;
pub mod service;

pub use ca::{ClusterCa, DEFAULT_CERT_TTL};
pub use local::Local;
pub use record::PkiRecord;
pub use seal::ClusterKey;
