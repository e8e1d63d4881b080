//! Handlers that do not resolve (L014, L015): an AWS-managed runtime loads the handler's file
//! at the first invoke, and a name that leads nowhere fails there with
//! `Runtime.ImportModuleError` (or its Node.js, Ruby, Java, .NET equivalent). Only what the
//! file system can show is judged: a Java class inside a jar is not looked for.

use super::fs::{FileSystem, Kind};
use super::rules::{Finding, Process, Rule};
use super::runtime::RuntimeInfo;
use crate::spec::runtime::Family;

/// The AWS base images' entrypoint: it hands its arguments (the handler) to the runtime.
pub const AWS_ENTRYPOINT: &str = "/lambda-entrypoint.sh";

/// The handler an AWS base image's entrypoint receives: ENTRYPOINT\[1\], else CMD\[0\]; `None`
/// when the image does not start through the AWS entrypoint.
pub fn handler_of(p: &Process) -> Option<&str> {
    if p.entrypoint.first().map(String::as_str) != Some(AWS_ENTRYPOINT) {
        return None;
    }
    p.entrypoint
        .get(1)
        .or(p.cmd.first())
        .map(String::as_str)
        .filter(|h| !h.is_empty())
}

/// L014 (or L015) for the image's handler: one an AWS base image's entrypoint receives, or one
/// AWS's runtime interface client receives on another base ([`client_start`]).
pub fn handler(fs: &FileSystem, p: &Process, rt: &RuntimeInfo) -> Vec<Finding> {
    if let Some(h) = handler_of(p) {
        return check(fs, p, rt, h, "/var/task");
    }
    let Some((h, client_rt)) = client_start(fs, p) else {
        return Vec::new();
    };
    let task = p
        .var("LAMBDA_TASK_ROOT")
        .filter(|t| t.starts_with('/'))
        .unwrap_or("/var/task");
    check(fs, p, &client_rt, h, task)
}

/// The handler and language of an image that starts AWS's runtime interface client itself, as
/// `[function] runtime_client` writes it (or by hand): `python3 -m awslambdaric`, `node
/// …/aws-lambda-ric/…`, or `java … com.amazonaws.services.lambda.runtime.api.client.AWSLambda`,
/// the handler being the first argument after the entrypoint (CMD\[0\]). The Python version
/// is the interpreter's, as the build finds it.
pub fn client_start<'a>(fs: &FileSystem, p: &'a Process) -> Option<(&'a str, RuntimeInfo)> {
    let e = &p.entrypoint;
    let program = e.first()?.rsplit('/').next().unwrap_or_default();
    let family = if program.starts_with("python3")
        && e.windows(2).any(|w| w[0] == "-m" && w[1] == "awslambdaric")
    {
        Family::Python
    } else if program == "node" && e.iter().skip(1).any(|a| a.contains("aws-lambda-ric")) {
        Family::Node
    } else if program == "java" && e.iter().any(|a| a == crate::spec::client::JAVA_MAIN) {
        Family::Java
    } else {
        return None;
    };
    let h = p
        .cmd
        .first()
        .map(String::as_str)
        .filter(|h| !h.is_empty())?;
    let python = (family == Family::Python)
        .then(|| {
            let real = fs.resolve(e[0].trim_start_matches('/')).ok()?;
            super::client::python_version(fs, &real)
        })
        .flatten();
    Some((
        h,
        RuntimeInfo {
            family: Some(family),
            python,
            name: None,
        },
    ))
}

/// L014 (or L015) for handler `h` of a function whose code is at `task` (`/var/task`).
pub fn check(fs: &FileSystem, p: &Process, rt: &RuntimeInfo, h: &str, task: &str) -> Vec<Finding> {
    let task = task.trim_matches('/');
    let problem = match rt.family {
        None => {
            return vec![Finding::new(
                Rule::L015,
                format!(
                    "the handler `{h}` was not checked: the image's runtime is not one lamina recognizes (no /var/lang/bin/python3.N, node, ruby, java or dotnet; set [function] runtime)"
                ),
            )];
        }
        Some(Family::Provided) => return Vec::new(),
        Some(Family::Python) => python(fs, p, rt, h, task),
        Some(Family::Node) => node(fs, h, task),
        Some(Family::Ruby) => ruby(fs, h, task),
        Some(Family::Java) => java(fs, h, task),
        Some(Family::DotNet) => dotnet(fs, h, task),
    };
    problem
        .map(|why| {
            vec![Finding::new(
                Rule::L014,
                format!("the handler `{h}` {why}: the first invoke would fail with `Runtime.ImportModuleError` (or the runtime's equivalent); fix the handler (CMD, [function] handler) or add the file"),
            )]
        })
        .unwrap_or_default()
}

fn is_file(fs: &FileSystem, path: &str) -> bool {
    fs.resolve(path)
        .ok()
        .and_then(|r| fs.get(&r).map(|n| n.kind == Kind::File))
        .unwrap_or(false)
}

fn is_dir(fs: &FileSystem, path: &str) -> bool {
    fs.resolve(path)
        .ok()
        .and_then(|r| fs.get(&r).map(|n| n.kind == Kind::Dir))
        .unwrap_or(false)
}

/// `module.function`: the module (dots or slashes) as `.py`, a package's `__init__.py`, a
/// compiled `.pyc` or an extension module, in the function's directory, the runtime's and
/// the layers' paths or `PYTHONPATH`.
fn python(fs: &FileSystem, p: &Process, rt: &RuntimeInfo, h: &str, task: &str) -> Option<String> {
    let Some((module, _func)) = h.rsplit_once('.') else {
        return Some("is not `module.function`".to_owned());
    };
    let rel = module.replace(['.', '/'], "/");
    let mut dirs = vec![
        task.to_owned(),
        "var/runtime".to_owned(),
        "opt/python".to_owned(),
    ];
    if let Some(v) = rt.python_version() {
        dirs.push(format!("opt/python/lib/python{v}/site-packages"));
        dirs.push(format!("var/lang/lib/python{v}/site-packages"));
    }
    if let Some(pp) = p.var("PYTHONPATH") {
        dirs.extend(
            pp.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| d.trim_matches('/').to_owned()),
        );
    }
    let stem = rel.rsplit('/').next().unwrap_or(&rel);
    for d in &dirs {
        let base = format!("{d}/{rel}");
        if is_file(fs, &format!("{base}.py"))
            || is_file(fs, &format!("{base}.pyc"))
            || is_file(fs, &format!("{base}/__init__.py"))
        {
            return None;
        }
        let parent = base.rsplit_once('/').map_or("", |(a, _)| a);
        if let Ok(real) = fs.resolve(parent) {
            let ext = fs.subtree(&real).any(|(k, n)| {
                let name = k.rsplit('/').next().unwrap_or(k);
                n.kind == Kind::File
                    && k.rsplit_once('/').map(|(a, _)| a) == Some(real.as_str())
                    && name.starts_with(&format!("{stem}."))
                    && name.ends_with(".so")
            });
            if ext {
                return None;
            }
        }
    }
    Some(format!(
        "names the Python module `{module}`, but no {rel}.py (or package {rel}/__init__.py) is in /{task}, the runtime's path or PYTHONPATH"
    ))
}

/// `file.export` (the file may sit in directories: `src/app.handler`): `.js`, `.mjs` or
/// `.cjs` in the function's directory.
fn node(fs: &FileSystem, h: &str, task: &str) -> Option<String> {
    let (dir, last) = h.rsplit_once('/').map_or(("", h), |(d, l)| (d, l));
    let Some((file, _export)) = last.split_once('.') else {
        return Some("is not `file.export`".to_owned());
    };
    let rel = if dir.is_empty() {
        file.to_owned()
    } else {
        format!("{dir}/{file}")
    };
    let base = format!("{task}/{rel}");
    let found = ["js", "mjs", "cjs"]
        .iter()
        .any(|e| is_file(fs, &format!("{base}.{e}")))
        || is_file(fs, &base)
        || is_file(fs, &format!("{base}/index.js"));
    (!found).then(|| {
        format!("names the module `{rel}`, but no {rel}.js, {rel}.mjs or {rel}.cjs is in /{task}")
    })
}

/// `file.method` (or `file.Class::method`): `file.rb` in the function's directory.
fn ruby(fs: &FileSystem, h: &str, task: &str) -> Option<String> {
    let (dir, last) = h.rsplit_once('/').map_or(("", h), |(d, l)| (d, l));
    let file = last.split('.').next().unwrap_or(last);
    let rel = if dir.is_empty() {
        file.to_owned()
    } else {
        format!("{dir}/{file}")
    };
    (!is_file(fs, &format!("{task}/{rel}.rb")))
        .then(|| format!("names the file `{rel}.rb`, which is not in /{task}"))
}

/// `package.Class::method` (or `package.Class`): the class file, unless a jar could hold it.
fn java(fs: &FileSystem, h: &str, task: &str) -> Option<String> {
    let class = h.split("::").next().unwrap_or(h);
    let rel = class.replace('.', "/");
    if is_file(fs, &format!("{task}/{rel}.class")) {
        return None;
    }
    let Ok(real) = fs.resolve(task) else {
        return Some(format!(
            "names the class `{class}`, but /{task} does not exist"
        ));
    };
    let jar = fs
        .subtree(&real)
        .any(|(k, n)| n.kind == Kind::File && k.ends_with(".jar"));
    (!jar).then(|| {
        format!("names the class `{class}`, but neither {rel}.class nor any .jar is in /{task}")
    })
}

/// `Assembly::Namespace.Class::Method` (or an executable assembly's name): `Assembly.dll`.
fn dotnet(fs: &FileSystem, h: &str, task: &str) -> Option<String> {
    let assembly = h.split("::").next().unwrap_or(h);
    if is_file(fs, &format!("{task}/{assembly}.dll")) || is_dir(fs, &format!("{task}/{assembly}")) {
        return None;
    }
    Some(format!(
        "names the assembly `{assembly}`, but {assembly}.dll is not in /{task}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lambda::fs::Node;
    use crate::lambda::runtime::from_hint;

    fn rules_of(fs: &FileSystem, rt: &str, h: &str) -> Vec<Rule> {
        let rt = from_hint(rt).unwrap();
        check(fs, &Process::default(), &rt, h, "/var/task")
            .iter()
            .map(|f| f.rule)
            .collect()
    }

    #[test]
    fn ruby_java_and_dotnet_as_far_as_files_show() {
        let mut fs = FileSystem::new();
        fs.insert("var/task/lambda_function.rb", Node::file(0o644, b""));
        fs.insert("var/task/com/example/Handler.class", Node::file(0o644, b""));
        fs.insert("var/task/MyFn.dll", Node::file(0o644, b""));
        assert_eq!(
            rules_of(&fs, "ruby3.3", "lambda_function.lambda_handler"),
            []
        );
        assert_eq!(rules_of(&fs, "ruby3.3", "app.handler"), [Rule::L014]);
        assert_eq!(
            rules_of(&fs, "java21", "com.example.Handler::handleRequest"),
            []
        );
        assert_eq!(
            rules_of(&fs, "java21", "com.example.Other::handleRequest"),
            [Rule::L014]
        );
        assert_eq!(rules_of(&fs, "dotnet8", "MyFn::MyFn.Function::Handler"), []);
        assert_eq!(
            rules_of(&fs, "dotnet8", "Other::Other.Function::Handler"),
            [Rule::L014]
        );
        // A jar could hold any class: not judged.
        fs.insert("var/task/lib/app.jar", Node::file(0o644, b""));
        assert_eq!(
            rules_of(&fs, "java21", "com.example.Other::handleRequest"),
            []
        );
        // OS-only runtimes have no handler to resolve.
        assert_eq!(rules_of(&fs, "provided.al2023", "anything"), []);
    }

    fn started(entrypoint: &[&str], cmd: &str) -> Process {
        Process {
            entrypoint: entrypoint.iter().map(|s| (*s).to_owned()).collect(),
            cmd: vec![cmd.to_owned()],
            env: vec!["LAMBDA_TASK_ROOT=/app".into()],
            workdir: String::new(),
        }
    }

    /// The runtime interface client's own starts are recognized, with the language and the
    /// handler; the handler is then looked for under LAMBDA_TASK_ROOT.
    #[test]
    fn images_that_start_the_runtime_client_have_their_handler_judged() {
        let mut fs = FileSystem::new();
        fs.insert("usr/bin/python3.11", Node::file(0o755, b""));
        fs.insert("app/app.py", Node::file(0o644, b""));
        fs.insert("app/index.mjs", Node::file(0o644, b""));
        let rt = RuntimeInfo {
            family: None,
            python: None,
            name: None,
        };
        let rules =
            |p: &Process| -> Vec<Rule> { handler(&fs, p, &rt).iter().map(|f| f.rule).collect() };
        let py = ["/usr/bin/python3.11", "-m", "awslambdaric"];
        let p = started(&py, "app.handler");
        let (h, info) = client_start(&fs, &p).unwrap();
        assert_eq!(
            (h, info.family, info.python),
            ("app.handler", Some(Family::Python), Some((3, 11)))
        );
        assert_eq!(rules(&started(&py, "app.handler")), []);
        assert_eq!(rules(&started(&py, "nowhere.handler")), [Rule::L014]);
        let node = [
            "/usr/bin/node",
            "/var/runtime/node_modules/aws-lambda-ric/bin/index.mjs",
        ];
        assert_eq!(rules(&started(&node, "index.handler")), []);
        assert_eq!(rules(&started(&node, "missing.handler")), [Rule::L014]);
        let java = [
            "/usr/bin/java",
            "-cp",
            "/var/runtime/lib/*",
            crate::spec::client::JAVA_MAIN,
        ];
        assert_eq!(
            rules(&started(&java, "com.example.Gone::handleRequest")),
            [Rule::L014]
        );
        // Any other program: not the client's start, not judged.
        assert!(client_start(&fs, &started(&["/usr/bin/python3", "app.py"], "x.y")).is_none());
        assert_eq!(rules(&started(&["/bin/sh", "-c"], "nowhere.handler")), []);
    }
}
