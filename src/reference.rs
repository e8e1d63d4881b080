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
    Oci { dir: PathBuf, tag: Option<String> },
    /// A tar file holding an OCI image layout.
    OciArchive { file: PathBuf, tag: Option<String> },
    /// A `docker save` style tar; `name` is the `repo:tag` recorded in its `RepoTags`.
    DockerArchive { file: PathBuf, name: Option<String> },
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
        }
    }

    /// The file or directory this reference names on the local file system, if any.
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            ImageRef::Scratch => None,
            ImageRef::Oci { dir, .. } => Some(dir),
            ImageRef::OciArchive { file, .. } | ImageRef::DockerArchive { file, .. } => Some(file),
        }
    }
}

fn check_tag(s: &str, what: &str, full: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err(format!("image reference `{full}`: empty {what} after `:`"));
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "image reference `{full}`: {what} `{s}` contains the invalid character {c:?}"
        ));
    }
    Ok(s.to_owned())
}

fn non_empty_path(p: &str, full: &str) -> Result<PathBuf, String> {
    if p.is_empty() {
        Err(format!("image reference `{full}`: the path is empty"))
    } else {
        Ok(PathBuf::from(p))
    }
}

impl FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "scratch" {
            return Ok(ImageRef::Scratch);
        }
        let Some((transport, rest)) = s.split_once(':') else {
            return Err(format!(
                "image reference `{s}` has no transport: use oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG] or scratch"
            ));
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
            "docker" => Err(format!(
                "image reference `{s}`: registry references (docker://) are not supported yet; use a local oci:, oci-archive: or docker-archive: image"
            )),
            other => Err(format!(
                "image reference `{s}`: unknown transport `{other}`; use oci:, oci-archive:, docker-archive: or scratch"
            )),
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
            let e = bad.parse::<ImageRef>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert!(
            "docker://example.com/a:b"
                .parse::<ImageRef>()
                .unwrap_err()
                .contains("not supported yet")
        );
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
