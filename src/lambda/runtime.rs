//! Which Lambda runtime an image (or zip) runs: from the runtime name the spec gives (`python3.12`,
//! or its AWS base image `public.ecr.aws/lambda/python:3.12`), else from what the AWS base
//! images put in `/var/lang/bin`. The native-code and handler rules need it: a Python
//! extension must fit the runtime's Python, a handler resolves differently per language.

use super::fs::{BOOTSTRAPS, FileSystem};
use crate::spec::runtime::Family;

/// What is known of the runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// The language, when known.
    pub family: Option<Family>,
    /// The Python version `(3, minor)` of a Python runtime, when known.
    pub python: Option<(u32, u32)>,
    /// Lambda's name for it (`python3.12`), when known.
    pub name: Option<String>,
}

impl RuntimeInfo {
    /// The Python version as pip's `--python-version` and wheel tags spell it (`3.12`,
    /// `cp312`).
    pub fn python_version(&self) -> Option<String> {
        self.python.map(|(a, b)| format!("{a}.{b}"))
    }
}

/// From a Lambda runtime name (`python3.12`, `nodejs20.x`, `provided.al2023`) or an AWS base
/// image reference (`…/lambda/python:3.12`).
pub fn from_hint(hint: &str) -> Option<RuntimeInfo> {
    let name = match hint.rsplit_once("lambda/") {
        Some((_, img)) => {
            let (lang, tag) = img.split_once(':').unwrap_or((img, ""));
            let tag = tag.split('@').next().unwrap_or("");
            match lang {
                "python" | "ruby" | "java" | "dotnet" => format!("{lang}{tag}"),
                "nodejs" => format!("nodejs{}.x", tag.split('.').next().unwrap_or("")),
                "provided" => format!("provided.{tag}"),
                _ => return None,
            }
        }
        None => hint.to_owned(),
    };
    let family = if name.starts_with("python") {
        Family::Python
    } else if name.starts_with("nodejs") {
        Family::Node
    } else if name.starts_with("java") {
        Family::Java
    } else if name.starts_with("dotnet") {
        Family::DotNet
    } else if name.starts_with("ruby") {
        Family::Ruby
    } else if name.starts_with("provided") {
        Family::Provided
    } else {
        return None;
    };
    let python = name
        .strip_prefix("python")
        .and_then(|v| v.split_once('.'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    Some(RuntimeInfo {
        family: Some(family),
        python,
        name: Some(name),
    })
}

/// What the file system shows: `/var/lang/bin/python3.N`, `node`, `ruby`, `java`, `dotnet`
/// (the AWS base images' layout), else a bootstrap (an OS-only runtime).
pub fn from_fs(fs: &FileSystem) -> RuntimeInfo {
    let mut python = None;
    for (path, _) in fs.subtree("var/lang/bin") {
        let name = path.rsplit('/').next().unwrap_or("");
        if let Some(v) = name.strip_prefix("python3.")
            && let Ok(minor) = v.parse::<u32>()
        {
            python = python.max(Some((3, minor)));
        }
    }
    if let Some((a, b)) = python {
        return RuntimeInfo {
            family: Some(Family::Python),
            python,
            name: Some(format!("python{a}.{b}")),
        };
    }
    let has = |p: &str| fs.resolve(p).is_ok();
    let family = [
        ("var/lang/bin/node", Family::Node),
        ("var/lang/bin/ruby", Family::Ruby),
        ("var/lang/bin/java", Family::Java),
        ("var/lang/bin/dotnet", Family::DotNet),
    ]
    .into_iter()
    .find(|(p, _)| has(p))
    .map(|(_, f)| f)
    .or_else(|| {
        BOOTSTRAPS
            .iter()
            .any(|b| fs.exists(b))
            .then_some(Family::Provided)
    });
    RuntimeInfo {
        family,
        python: None,
        name: None,
    }
}

/// The hint where it names a runtime, completed by the file system (a Python version the hint
/// lacks); else the file system alone.
pub fn detect(fs: &FileSystem, hint: Option<&str>) -> RuntimeInfo {
    let seen = from_fs(fs);
    match hint.and_then(from_hint) {
        Some(mut h) => {
            if h.family == Some(Family::Python) && h.python.is_none() {
                h.python = seen.python;
            }
            h
        }
        None => seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lambda::fs::Node;

    #[test]
    fn names_and_base_images() {
        let p = from_hint("python3.12").unwrap();
        assert_eq!((p.family, p.python), (Some(Family::Python), Some((3, 12))));
        let p = from_hint("docker://public.ecr.aws/lambda/python:3.11").unwrap();
        assert_eq!(p.python, Some((3, 11)));
        assert_eq!(p.name.as_deref(), Some("python3.11"));
        let n = from_hint("public.ecr.aws/lambda/nodejs:20").unwrap();
        assert_eq!(n.name.as_deref(), Some("nodejs20.x"));
        assert_eq!(from_hint("docker.io/library/alpine:3"), None);
    }

    #[test]
    fn the_aws_layout_tells_the_runtime() {
        let mut fs = FileSystem::new();
        fs.insert("var/lang/bin/python3.12", Node::file(0o755, b"\x7fELF"));
        let r = from_fs(&fs);
        assert_eq!(r.python, Some((3, 12)));
        let mut fs = FileSystem::new();
        fs.insert("var/lang/bin/node", Node::file(0o755, b"\x7fELF"));
        assert_eq!(from_fs(&fs).family, Some(Family::Node));
        assert_eq!(from_fs(&FileSystem::new()).family, None);
    }
}
