//! Lambda's managed runtimes and the AWS base images that carry them.

/// A runtime identifier as Lambda names it, and its base image on ECR Public.
#[derive(Debug)]
pub struct Runtime {
    /// Lambda's identifier (`python3.12`), as in `[function] runtime`.
    pub name: &'static str,
    /// The AWS base image, without a transport (`public.ecr.aws/lambda/python:3.12`).
    pub image: &'static str,
    /// Dependencies that live beside the code and deserve a layer of their own.
    pub family: Family,
}

/// The language a runtime runs: it decides where dependencies are looked for and the starter
/// spec's handler and excludes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    /// `python3.x`: packages pip installed beside the code get a layer of their own.
    Python,
    /// `nodejsNN.x`: `node_modules` beside the handler gets a layer of its own.
    Node,
    /// `javaNN`.
    Java,
    /// `dotnetNN`.
    DotNet,
    /// `rubyN.N`.
    Ruby,
    /// OS-only runtimes: the function brings its own `bootstrap`.
    Provided,
}

macro_rules! rt {
    ($name:literal, $image:literal, $family:ident) => {
        Runtime {
            name: $name,
            image: concat!("public.ecr.aws/lambda/", $image),
            family: Family::$family,
        }
    };
}

/// The runtimes lamina knows, newest first within each family.
pub const RUNTIMES: &[Runtime] = &[
    rt!("provided.al2023", "provided:al2023", Provided),
    rt!("provided.al2", "provided:al2", Provided),
    rt!("python3.14", "python:3.14", Python),
    rt!("python3.13", "python:3.13", Python),
    rt!("python3.12", "python:3.12", Python),
    rt!("python3.11", "python:3.11", Python),
    rt!("python3.10", "python:3.10", Python),
    rt!("python3.9", "python:3.9", Python),
    rt!("nodejs24.x", "nodejs:24", Node),
    rt!("nodejs22.x", "nodejs:22", Node),
    rt!("nodejs20.x", "nodejs:20", Node),
    rt!("nodejs18.x", "nodejs:18", Node),
    rt!("java25", "java:25", Java),
    rt!("java21", "java:21", Java),
    rt!("java17", "java:17", Java),
    rt!("java11", "java:11", Java),
    rt!("java8.al2", "java:8.al2", Java),
    rt!("dotnet10", "dotnet:10", DotNet),
    rt!("dotnet8", "dotnet:8", DotNet),
    rt!("ruby3.4", "ruby:3.4", Ruby),
    rt!("ruby3.3", "ruby:3.3", Ruby),
    rt!("ruby3.2", "ruby:3.2", Ruby),
];

/// A runtime name lamina does not know; the message offers the nearest known name and lists
/// the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown Lambda runtime `{name}`{}; known: {}",
    did_you_mean(name),
    known()
)]
pub struct UnknownRuntime {
    /// The name as given.
    pub name: String,
}

fn did_you_mean(name: &str) -> String {
    nearest(name)
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default()
}

/// The known runtime nearest to `name` (edit distance, case ignored), when it is near enough
/// to be a slip: at most a third of the longer name's characters away (`nodejs20` is
/// `nodejs20.x`, `python3.21` is `python3.12`, `Python3.12` is `python3.12`).
pub fn nearest(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    RUNTIMES
        .iter()
        .map(|r| (distance(&lower, r.name), r.name))
        .filter(|(d, n)| *d * 3 <= n.len().max(lower.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance between two short strings.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn known() -> String {
    let names: Vec<&str> = RUNTIMES.iter().map(|r| r.name).collect();
    names.join(", ")
}

/// Look a runtime up by Lambda's name (`python3.12`, `nodejs20.x`, `provided.al2023`, ...).
pub fn find(name: &str) -> Result<&'static Runtime, UnknownRuntime> {
    RUNTIMES
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| UnknownRuntime {
            name: name.to_owned(),
        })
}

/// The handler a starter spec uses for a runtime.
pub fn default_handler(f: Family) -> &'static str {
    match f {
        Family::Python => "app.handler",
        Family::Node => "index.handler",
        Family::Java => "example.Handler::handleRequest",
        Family::DotNet => "Function::Function.Function::FunctionHandler",
        Family::Ruby => "app.handler",
        Family::Provided => "function.handler",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_map_to_aws_base_images() {
        assert_eq!(
            find("python3.12").unwrap().image,
            "public.ecr.aws/lambda/python:3.12"
        );
        assert_eq!(
            find("nodejs20.x").unwrap().image,
            "public.ecr.aws/lambda/nodejs:20"
        );
        assert_eq!(
            find("provided.al2023").unwrap().image,
            "public.ecr.aws/lambda/provided:al2023"
        );
        assert_eq!(find("java21").unwrap().family, Family::Java);
        let e = find("cobol1").unwrap_err().to_string();
        assert!(e.contains("cobol1") && e.contains("python3.12"), "{e}");
        assert!(!e.contains("did you mean"), "{e}");
        let e = find("nodejs20").unwrap_err().to_string();
        assert!(e.contains("did you mean `nodejs20.x`?"), "{e}");
        assert_eq!(nearest("Python3.12"), Some("python3.12"));
        assert_eq!(nearest("go1.x"), None);
        assert_eq!(nearest("provided"), Some("provided.al2"));
        for r in RUNTIMES {
            let reference = format!("docker://{}", r.image);
            assert!(
                reference.parse::<crate::reference::ImageRef>().is_ok(),
                "{}",
                r.image
            );
        }
    }
}
