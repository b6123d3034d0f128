//! Helpers shared by the integration tests (`mod common;`).
pub mod daemon;
pub mod testpmd;
