//! Node bootstrap for kompact-kv: configuration loading, logging setup, cluster
//! formation (the `Bootstrap` component) and the node host that builds a node's
//! component graph.
#![deny(missing_docs)]

pub mod boot;
pub mod config;
pub mod hocon;
pub mod logging;
pub mod node;
pub mod status;
