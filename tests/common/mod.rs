//! Helpers shared by the integration tests (`mod common;`).
pub mod cni;
pub mod daemon;
pub mod netns;
pub mod qemu;
pub mod testpmd;
