//! The parts of the `kvstore` command line that are plain functions, as a library,
//! so that tests and the fuzz targets (`fuzz/`) can call them directly.
#![deny(missing_docs)]

pub mod console;
pub mod gateway;
pub mod report;
pub mod timeline;
