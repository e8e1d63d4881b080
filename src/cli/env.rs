//! What the process environment says about where lamina's files are: read here, at the edge,
//! and passed into the library (which reads no environment variables itself).

use std::path::PathBuf;

/// A variable's value, when set and not empty.
fn var(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// The blob, layer and root file system cache: `LAMINA_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/lamina`, else `~/.cache/lamina` (a directory in the system's temporary
/// directory without a home).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = var("LAMINA_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("lamina");
    }
    match var("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("lamina"),
        None => std::env::temp_dir().join("lamina-cache"),
    }
}

/// The directory of the docker `config.json`: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn docker_config_dir() -> PathBuf {
    if let Some(d) = var("DOCKER_CONFIG") {
        return PathBuf::from(d);
    }
    var("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".docker")
}

/// `LAMINA_DEBUG` set (not empty, not `0`): debug traces on stderr.
pub fn debug() -> bool {
    var("LAMINA_DEBUG").is_some_and(|v| v != "0")
}

/// `SSL_CERT_FILE`: a PEM bundle trusted besides the system's (after any `--ca-cert`).
pub fn ssl_cert_file() -> Option<PathBuf> {
    var("SSL_CERT_FILE").map(PathBuf::from)
}

/// Whether S3 is reached at a custom endpoint (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`):
/// stand-ins there (moto, MinIO) need path-style bucket addressing.
pub fn custom_s3_endpoint() -> bool {
    var("AWS_ENDPOINT_URL_S3").is_some() || var("AWS_ENDPOINT_URL").is_some()
}

/// `LAMINA_ROOTFS`: how `run`/`invoke` put an image's layers together — `overlay`, `copy`,
/// or `auto` (the default: overlayfs where the kernel allows it in a user namespace).
pub fn composition() -> anyhow::Result<lamina::run::Composition> {
    use lamina::run::Composition;
    match var("LAMINA_ROOTFS").as_deref().map(|v| v.to_str()) {
        None | Some(Some("auto")) => Ok(Composition::Auto),
        Some(Some("overlay")) => Ok(Composition::Overlay),
        Some(Some("copy")) => Ok(Composition::Copy),
        Some(v) => Err(lamina::Error::Usage(format!(
            "LAMINA_ROOTFS is {:?}: it takes auto, overlay or copy",
            v.unwrap_or("(not UTF-8)")
        ))
        .into()),
    }
}

/// `LAMINA_CACHE_MAX`: the cache's size cap (`10G`, `500M`…), else [`lamina::gc::DEFAULT_MAX`].
pub fn cache_max() -> anyhow::Result<u64> {
    match var("LAMINA_CACHE_MAX") {
        None => Ok(lamina::gc::DEFAULT_MAX),
        Some(v) => {
            let s = v.to_string_lossy();
            lamina::gc::parse_size(&s)
                .map_err(|e| lamina::Error::Usage(format!("LAMINA_CACHE_MAX: {e}")).into())
        }
    }
}
