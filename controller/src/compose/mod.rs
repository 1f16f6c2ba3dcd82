//! The Compose loader. Owned by the compose work.
