//! Image references in skopeo's transport syntax: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
//! `docker-archive:FILE[:NAME:TAG]`, and `scratch` for an empty base.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where an image is read from or written to. Each variant is one transport.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ImageRef {
    /// The empty image: no layers, an empty config. Only meaningful as a base.
    Scratch,
    /// An OCI image layout directory; `tag` is the `org.opencontainers.image.ref.name` annotation.
    Oci {
        /// The layout directory.
        dir: PathBuf,
        /// Which manifest of the layout's index (its `ref.name`); none: the only one.
        tag: Option<String>,
    },
    /// A tar file holding an OCI image layout.
    OciArchive {
        /// The tar file.
        file: PathBuf,
        /// Which manifest of the layout's index (its `ref.name`); none: the only one.
        tag: Option<String>,
    },
    /// A `docker save` style tar; `name` is the `repo:tag` recorded in its `RepoTags`.
    DockerArchive {
        /// The tar file.
        file: PathBuf,
        /// `repo:tag` (`:latest` added when the tag is left out); none: the only image.
        name: Option<String>,
    },
    /// An image in a registry, reached over the distribution HTTP API.
    Docker(RegistryRef),
}

/// Docker Hub's name in references and credentials.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub serves its registry API from.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// The tag the registry build cache lives under when `--cache` names no tag: never `latest`,
/// which is a function's.
pub const BUILD_CACHE_TAG: &str = "lamina-cache";

/// The canonical name of a registry as written by a user: Docker Hub's aliases become
/// [`DOCKER_HUB`].
pub fn canonical_registry(registry: &str) -> &str {
    match registry {
        "index.docker.io" | DOCKER_HUB_API => DOCKER_HUB,
        other => other,
    }
}

/// The host a registry's API is served from (Docker Hub's differs from its name).
pub fn api_host(registry: &str) -> &str {
    match canonical_registry(registry) {
        DOCKER_HUB => DOCKER_HUB_API,
        _ => registry,
    }
}

/// `host[:port]/repo[:tag][@sha256:...]`, normalized as docker does: no host means Docker Hub,
/// and a one-word Docker Hub name lives under `library/`.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct RegistryRef {
    /// As written in references and credentials: `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// The repository path within the registry (`library/alpine`, `team/fn`).
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest was written.
    pub tag: Option<String>,
    /// The manifest digest the reference is pinned to, if any (it wins over the tag).
    pub digest: Option<crate::digest::Digest>,
}

/// Why a string is not an image or registry reference; the message quotes the reference and
/// says what is wrong. The caller turns it into the [`Error`](crate::error::Error) kind that fits
/// (a flag, a spec field, an image).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseReferenceError(String);

/// The message, for callers that build an error message around it.
impl From<ParseReferenceError> for String {
    fn from(e: ParseReferenceError) -> String {
        e.0
    }
}

impl RegistryRef {
    /// The host the API is served from (Docker Hub's differs from its name).
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// What to put after `/manifests/`: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The same repository at another tag or digest.
    pub fn with_digest(&self, d: crate::digest::Digest) -> RegistryRef {
        RegistryRef {
            digest: Some(d),
            ..self.clone()
        }
    }
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
        return false;
    }
    if !(b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit()) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !(b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

impl FromStr for RegistryRef {
    type Err = ParseReferenceError;
    fn from_str(s: &str) -> Result<Self, ParseReferenceError> {
        let bad = |why: &str| ParseReferenceError(format!("registry reference `{s}`: {why}"));
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<crate::digest::Digest>()
                        .map_err(|e| bad(&e.to_string()))?,
                ),
            ),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(bad(&format!(
                "tag `{t}` is invalid (letters, digits, `_`, `.`, `-`; at most 128; not starting with `.` or `-`)"
            )));
        }
        if name.is_empty() {
            return Err(bad("the repository name is empty"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = canonical_registry(&registry).to_owned();
        if registry
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'/')
            || registry.is_empty()
        {
            return Err(bad(&format!("registry host `{registry}` is invalid")));
        }
        let path = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.len() > 255 {
            return Err(bad("the repository name is longer than 255 characters"));
        }
        if let Some(c) = path.split('/').find(|c| !valid_path_component(c)) {
            return Err(bad(&format!(
                "repository component `{c}` is invalid: lowercase letters, digits and single separators (`.`, `_`, `__`, `-`) only"
            )));
        }
        Ok(RegistryRef {
            registry,
            repository: path,
            tag: match (tag, &digest) {
                (Some(t), _) => Some(t.to_owned()),
                (None, Some(_)) => None,
                (None, None) => Some("latest".to_owned()),
            },
            digest,
        })
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl ImageRef {
    /// Resolve a relative path against `base` (the spec's directory), leaving absolute ones alone.
    pub fn relative_to(self, base: &Path) -> ImageRef {
        let join = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        match self {
            ImageRef::Scratch => ImageRef::Scratch,
            ImageRef::Oci { dir, tag } => ImageRef::Oci {
                dir: join(dir),
                tag,
            },
            ImageRef::OciArchive { file, tag } => ImageRef::OciArchive {
                file: join(file),
                tag,
            },
            ImageRef::DockerArchive { file, name } => ImageRef::DockerArchive {
                file: join(file),
                name,
            },
            ImageRef::Docker(r) => ImageRef::Docker(r),
        }
    }

    /// The file or directory this reference names on the local file system, if any.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            ImageRef::Scratch | ImageRef::Docker(_) => None,
            ImageRef::Oci { dir, .. } => Some(dir),
            ImageRef::OciArchive { file, .. } | ImageRef::DockerArchive { file, .. } => Some(file),
        }
    }
}

fn check_tag(s: &str, what: &str, full: &str) -> Result<String, ParseReferenceError> {
    if s.is_empty() {
        return Err(ParseReferenceError(format!(
            "image reference `{full}`: empty {what} after `:`"
        )));
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(ParseReferenceError(format!(
            "image reference `{full}`: {what} `{s}` contains the invalid character {c:?}"
        )));
    }
    Ok(s.to_owned())
}

fn non_empty_path(p: &str, full: &str) -> Result<PathBuf, ParseReferenceError> {
    if p.is_empty() {
        Err(ParseReferenceError(format!(
            "image reference `{full}`: the path is empty"
        )))
    } else {
        Ok(PathBuf::from(p))
    }
}

impl FromStr for ImageRef {
    type Err = ParseReferenceError;
    fn from_str(s: &str) -> Result<Self, ParseReferenceError> {
        if s == "scratch" {
            return Ok(ImageRef::Scratch);
        }
        if let Some(r) = s.strip_prefix("docker://") {
            return r.parse().map(ImageRef::Docker);
        }
        let Some((transport, rest)) = s.split_once(':') else {
            return Err(ParseReferenceError(format!(
                "image reference `{s}` has no transport: use oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG], docker://REF or scratch"
            )));
        };
        match transport {
            "oci" | "oci-archive" => {
                let (path, tag) = match rest.split_once(':') {
                    Some((p, t)) => (p, Some(check_tag(t, "tag", s)?)),
                    None => (rest, None),
                };
                let path = non_empty_path(path, s)?;
                Ok(if transport == "oci" {
                    ImageRef::Oci { dir: path, tag }
                } else {
                    ImageRef::OciArchive { file: path, tag }
                })
            }
            "docker-archive" => {
                let (path, name) = match rest.split_once(':') {
                    Some((p, n)) => {
                        let n = check_tag(n, "name", s)?;
                        // `repo` alone means `repo:latest`, as docker does.
                        let last = n.rsplit('/').next().unwrap_or(&n);
                        let n = if last.contains(':') {
                            n
                        } else {
                            format!("{n}:latest")
                        };
                        (p, Some(n))
                    }
                    None => (rest, None),
                };
                Ok(ImageRef::DockerArchive {
                    file: non_empty_path(path, s)?,
                    name,
                })
            }
            "docker" => Err(ParseReferenceError(format!(
                "image reference `{s}`: a registry reference is written docker://HOST/REPO[:TAG]"
            ))),
            other => Err(ParseReferenceError(format!(
                "image reference `{s}`: unknown transport `{other}`; use oci:, oci-archive:, docker-archive:, docker:// or scratch"
            ))),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |t: &Option<String>| t.as_ref().map(|t| format!(":{t}")).unwrap_or_default();
        match self {
            ImageRef::Scratch => write!(f, "scratch"),
            ImageRef::Oci { dir, tag } => write!(f, "oci:{}{}", dir.display(), opt(tag)),
            ImageRef::OciArchive { file, tag } => {
                write!(f, "oci-archive:{}{}", file.display(), opt(tag))
            }
            ImageRef::DockerArchive { file, name } => {
                write!(f, "docker-archive:{}{}", file.display(), opt(name))
            }
            ImageRef::Docker(r) => write!(f, "docker://{r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_transport() {
        assert_eq!("scratch".parse::<ImageRef>().unwrap(), ImageRef::Scratch);
        assert_eq!(
            "oci:out/fn:latest".parse::<ImageRef>().unwrap(),
            ImageRef::Oci {
                dir: "out/fn".into(),
                tag: Some("latest".into())
            }
        );
        assert_eq!(
            "oci:out".parse::<ImageRef>().unwrap(),
            ImageRef::Oci {
                dir: "out".into(),
                tag: None
            }
        );
        assert_eq!(
            "docker-archive:fn.tar:team/fn".parse::<ImageRef>().unwrap(),
            ImageRef::DockerArchive {
                file: "fn.tar".into(),
                name: Some("team/fn:latest".into())
            }
        );
        assert_eq!(
            "docker-archive:fn.tar:localhost:5000/fn:v1"
                .parse::<ImageRef>()
                .unwrap(),
            ImageRef::DockerArchive {
                file: "fn.tar".into(),
                name: Some("localhost:5000/fn:v1".into())
            }
        );
        let r: ImageRef = "oci-archive:a.tar:v2".parse().unwrap();
        assert_eq!(r.to_string(), "oci-archive:a.tar:v2");
    }

    #[test]
    fn errors_name_the_reference() {
        for bad in ["oci:", "oci:dir:", "nope:x", "plain", "oci:d:bad tag"] {
            let e = bad.parse::<ImageRef>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn registry_references_normalize_like_docker() {
        let r = |s: &str| s.parse::<RegistryRef>();
        let a = r("alpine").unwrap();
        assert_eq!(
            (a.registry.as_str(), a.repository.as_str(), a.tag.as_deref()),
            ("docker.io", "library/alpine", Some("latest"))
        );
        assert_eq!(a.api_host(), "registry-1.docker.io");
        let b = r("user/app:v1").unwrap();
        assert_eq!(
            (b.registry.as_str(), b.repository.as_str()),
            ("docker.io", "user/app")
        );
        let c = r("localhost:5000/team/fn:v2").unwrap();
        assert_eq!(
            (c.registry.as_str(), c.repository.as_str(), c.tag.as_deref()),
            ("localhost:5000", "team/fn", Some("v2"))
        );
        let d = format!(
            "123.dkr.ecr.us-east-1.amazonaws.com/fn@sha256:{}",
            "a".repeat(64)
        );
        let d = r(&d).unwrap();
        assert_eq!(d.tag, None);
        assert!(d.manifest_reference().starts_with("sha256:"));
        assert_eq!(
            r("public.ecr.aws/lambda/provided:al2023")
                .unwrap()
                .to_string(),
            "public.ecr.aws/lambda/provided:al2023"
        );
        for bad in [
            "127.0.0.1:5000/UPPER/case:tag",
            "h.io/fn:bad tag!",
            "h.io/a//b",
            "h.io/-a",
            "h.io/fn:.x",
        ] {
            let e = r(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert!(matches!(
            "docker://h.io/fn:v1".parse::<ImageRef>().unwrap(),
            ImageRef::Docker(_)
        ));
    }

    #[test]
    fn relative_paths_resolve_against_the_spec_dir() {
        let r: ImageRef = "oci:base:latest".parse().unwrap();
        assert_eq!(
            r.relative_to(Path::new("/p")).local_path(),
            Some(Path::new("/p/base"))
        );
        let r: ImageRef = "oci:/abs:latest".parse().unwrap();
        assert_eq!(
            r.relative_to(Path::new("/p")).local_path(),
            Some(Path::new("/abs"))
        );
    }
}
