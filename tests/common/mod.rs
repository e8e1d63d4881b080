//! Helpers shared by the end-to-end tests, one module per peer or concern; everything is
//! re-exported here so a test file needs only `use common::*;`.
//!
//! - Running things: [`lamina_cli`] (the built `lamina` and its output), [`process`] (finding
//!   and bounding external programs), [`oci_tools`] (`skopeo`, `umoci`), [`sandbox`] (lamina in
//!   a temporary home, for the network tests).
//! - What the tests build from and check: [`fixtures`], [`layout`] (OCI layouts, digests),
//!   [`tars`], [`trees`] (file trees on disk), [`zips`], [`elf`] (tiny programs per CPU).
//! - [`netns`]: a private network namespace, for an address that is not loopback.
//! - Registry peers, all on loopback with state in temporary directories, every wait bounded
//!   and everything stopped on drop: [`distribution`] (`docker-registry`), [`token_server`],
//!   [`tls`], [`credentials`], [`fault_proxy`], [`redirect_registry`], [`fake_registry`] (answers
//!   written by the test: endless, trickling, silent), over the small HTTP/1.1
//!   of [`loopback_http`].
#![allow(dead_code)]

pub mod credentials;
pub mod distribution;
pub mod doc_examples;
pub mod elf;
pub mod fake_registry;
pub mod fault_proxy;
pub mod fixtures;
pub mod lamina_cli;
pub mod layout;
pub mod loopback_http;
pub mod moto;
pub mod netns;
pub mod oci_tools;
pub mod process;
pub mod redirect_registry;
pub mod sandbox;
pub mod schema_check;
pub mod tars;
pub mod tls;
pub mod token_server;
pub mod trees;
pub mod zips;

// Each test binary compiles this module on its own and uses only part of it.
#[allow(unused_imports)]
pub use self::{
    credentials::*, distribution::*, doc_examples::*, elf::*, fake_registry::*, fault_proxy::*,
    fixtures::*, lamina_cli::*, layout::*, loopback_http::*, moto::*, netns::*, oci_tools::*,
    process::*, redirect_registry::*, sandbox::*, schema_check::*, tars::*, tls::*,
    token_server::*, trees::*, zips::*,
};

pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const EPOCH: &str = "1970-01-01T00:00:00Z";
