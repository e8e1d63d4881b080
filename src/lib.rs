//! lamina: a daemonless, reproducible OCI image assembler for AWS Lambda.
//!
//! The flow of a build: [`spec::BuildSpec`] → base read through a [`transport`] for one
//! [`platform::Platform`] → new layers written by [`layer`] → config and manifest assembled by
//! [`image`] → written through a transport. [`build::build`] runs it.
//!
//! The entry points are async and run on the caller's tokio runtime (see [`task`]); caches,
//! credentials and settings come in through [`registry::Options`]: the library reads no
//! environment variables and keeps no global state.

pub mod build;
pub mod cache;
pub mod digest;
pub mod error;
pub mod image;
pub mod lambda;
pub mod layer;
pub mod platform;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod run;
pub mod spec;
pub mod task;
pub mod transport;

pub use error::{Error, Result};
