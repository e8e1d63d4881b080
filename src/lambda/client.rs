//! A runtime interface client on a base that is not one of AWS's Lambda images
//! (`[function] runtime_client`): the interpreter found in the base, the config that starts the
//! client, and the checks that can be made before anything is pushed.
//!
//! The config follows the clients' READMEs and AWS's base images: ENTRYPOINT starts the
//! client with the base's interpreter (`python3 -m awslambdaric`, `node
//! …/aws-lambda-ric/bin/index.mjs`, `java -cp … com.amazonaws.services.lambda.runtime.api.
//! client.AWSLambda`), CMD is the handler, `LAMBDA_TASK_ROOT=/var/task`,
//! `LAMBDA_RUNTIME_DIR=/var/runtime`, the language's module path includes the client's
//! directory and the code's, and WORKDIR is `/var/task`. What `[config]` (or a flag) sets
//! wins.
//!
//! Rules: L020 (the interpreter is not in the base), L021 (the client's files are not where
//! the spec says), and the gate's own L009 (native parts of the client for another CPU), L010
//! (the client's wheel or extension modules for another Python: a `cp311` client on a
//! `python3.12` base) and L014 (the handler does not resolve on the module path the client
//! uses).

use std::path::Path;

use super::fs::{FileSystem, Kind};
use super::rules::{Finding, Process, Rule};
use super::runtime::RuntimeInfo;
use crate::error::{Error, Result};
use crate::spec::BuildSpec;
use crate::spec::client::{CLIENT_DIR, JAVA_MAIN, Language, RuntimeClient, TASK_ROOT};

/// The most bytes read of any one file of the client on this machine (a `WHEEL` file, an ELF
/// header, a package.json).
const READ_CAP: u64 = 64 << 10;

/// The most files of a client directory looked at (a `node_modules` can be large).
const MAX_FILES: usize = 50_000;

/// The base's interpreter for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interpreter {
    /// Its absolute path in the image, as found on PATH (`/usr/bin/python3`).
    pub path: String,
    /// For Python, `(3, minor)` when the file system tells it.
    pub python: Option<(u32, u32)>,
}

/// The base's merged file system, from its layers' indexes (remembered when the base was
/// verified, so this reads no layer again).
pub fn base_fs(base: &crate::image::Image, cache: &Path, reference: &str) -> Result<FileSystem> {
    let mut fs = FileSystem::new();
    for l in &base.layers {
        let index = l
            .fs_index(cache)
            .map_err(|e| Error::image(reference, format!("layer {}: {e}", l.digest)))?;
        fs.apply_items(index.items);
    }
    Ok(fs)
}

/// Is `path` (links followed inside the image) a regular file with an execute bit?
fn executable(fs: &FileSystem, path: &str) -> Option<String> {
    let real = fs.resolve(path).ok()?;
    let n = fs.get(&real)?;
    (n.kind == Kind::File && n.mode & 0o111 != 0).then_some(real)
}

/// The first of the language's interpreters on `path_var` (the image's PATH), with the Python
/// version its file name (`python3.11`) or the standard library beside it
/// (`/usr/lib/python3.11/os.py`) tells.
pub fn find_interpreter(fs: &FileSystem, lang: Language, path_var: &str) -> Option<Interpreter> {
    for name in lang.interpreters() {
        for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
            let at = format!("{}/{name}", dir.trim_end_matches('/'));
            let Some(real) = executable(fs, at.trim_start_matches('/')) else {
                continue;
            };
            let python = (lang == Language::Python)
                .then(|| python_version(fs, &real))
                .flatten();
            return Some(Interpreter { path: at, python });
        }
    }
    None
}

/// `python3.N` in the interpreter's real file name, else the one `lib/python3.N/os.py` of its
/// prefix (`/usr` for `/usr/bin/python3.11`).
pub(super) fn python_version(fs: &FileSystem, real: &str) -> Option<(u32, u32)> {
    let parse = |s: &str| {
        let minor = s.strip_prefix("python3.")?;
        minor.parse::<u32>().ok().map(|m| (3, m))
    };
    let file = real.rsplit('/').next().unwrap_or(real);
    if let Some(v) = parse(file) {
        return Some(v);
    }
    let prefix = real
        .rsplit_once('/')
        .and_then(|(bin, _)| bin.rsplit_once('/'))
        .map_or("", |(p, _)| p);
    let lib = if prefix.is_empty() {
        "lib".to_owned()
    } else {
        format!("{prefix}/lib")
    };
    let found: Vec<(u32, u32)> = fs
        .subtree(&lib)
        .filter_map(|(k, _)| {
            let rest = k.strip_prefix(&format!("{lib}/"))?;
            let (dir, file) = rest.split_once('/')?;
            (file == "os.py").then(|| parse(dir)).flatten()
        })
        .collect();
    match found.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The config the client needs, filled in where the build's config leaves it unset.
fn complete_config(spec: &mut BuildSpec, lang: Language, interp: &Interpreter, node_main: &str) {
    let c = &mut spec.config;
    if c.entrypoint.is_none() {
        c.entrypoint = Some(match lang {
            Language::Python => vec![interp.path.clone(), "-m".into(), "awslambdaric".into()],
            Language::Node => vec![interp.path.clone(), node_main.to_owned()],
            Language::Java => vec![
                interp.path.clone(),
                "-cp".into(),
                format!("{CLIENT_DIR}/lib/*:{TASK_ROOT}:{TASK_ROOT}/lib/*:/opt/java/lib/*"),
                JAVA_MAIN.into(),
            ],
        });
    }
    let env = |k: &str, v: String| (k.to_owned(), v);
    let mut add = vec![
        env("LAMBDA_TASK_ROOT", TASK_ROOT.into()),
        env("LAMBDA_RUNTIME_DIR", CLIENT_DIR.into()),
    ];
    match lang {
        Language::Python => add.push(env(
            "PYTHONPATH",
            format!("{TASK_ROOT}:/opt/python:{CLIENT_DIR}"),
        )),
        Language::Node => add.push(env(
            "NODE_PATH",
            format!("/opt/nodejs/node_modules:{CLIENT_DIR}/node_modules:{CLIENT_DIR}:{TASK_ROOT}"),
        )),
        Language::Java => {}
    }
    for (k, v) in add {
        c.env.entry(k).or_insert(v);
    }
    if c.workdir.is_none() {
        c.workdir = Some(TASK_ROOT.into());
    }
}

/// Files under `dir` on this machine (bounded), paths relative to it.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if out.len() >= MAX_FILES {
                return out;
            }
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The first `cap` bytes of a regular file.
fn head(p: &Path, cap: u64) -> Vec<u8> {
    use std::io::Read;
    let mut v = Vec::new();
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.take(cap).read_to_end(&mut v);
    }
    v
}

/// L021: the client's files are not where the spec says. For Node, also the file its
/// `package.json` names as the `aws-lambda-ric` command (the ENTRYPOINT's script).
fn client_files(c: &RuntimeClient, shown: &str, fetch: &str) -> (Vec<Finding>, String) {
    let missing = |what: &str| {
        vec![Finding::new(
            Rule::L021,
            format!("runtime_client path `{shown}` {what}: fetch the client there with `{fetch}`"),
        )]
    };
    let src = &c.source;
    match c.language {
        Language::Python if c.is_wheels() => match client_heads(c) {
            Err(e) => (
                missing(&format!("is not readable as wheels ({e})")),
                String::new(),
            ),
            Ok(files)
                if !files
                    .iter()
                    .any(|(rel, _)| rel == "awslambdaric/__main__.py") =>
            {
                (
                    missing("holds no awslambdaric wheel (no awslambdaric/__main__.py in it)"),
                    String::new(),
                )
            }
            Ok(_) => (Vec::new(), String::new()),
        },
        Language::Python if !src.join("awslambdaric/__main__.py").is_file() => (
            missing("does not hold awslambdaric (no awslambdaric/__main__.py)"),
            String::new(),
        ),
        Language::Node => {
            let pkg = src.join("node_modules/aws-lambda-ric");
            let json: serde_json::Value =
                serde_json::from_slice(&head(&pkg.join("package.json"), READ_CAP))
                    .unwrap_or_default();
            let bin = match json.get("bin") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Object(m)) => m
                    .get("aws-lambda-ric")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                _ => None,
            };
            match bin {
                Some(b) if pkg.join(&b).is_file() => (
                    Vec::new(),
                    format!(
                        "{CLIENT_DIR}/node_modules/aws-lambda-ric/{}",
                        b.trim_start_matches("./")
                    ),
                ),
                _ => (
                    missing("does not hold node_modules/aws-lambda-ric with its `bin` script"),
                    String::new(),
                ),
            }
        }
        Language::Java => {
            let jar = |p: &Path| p.extension().is_some_and(|e| e == "jar");
            let any = if src.is_file() {
                jar(src)
            } else {
                files_under(src).iter().any(|p| jar(p))
            };
            if any {
                (Vec::new(), String::new())
            } else {
                (
                    missing("is not a jar nor a directory of jars"),
                    String::new(),
                )
            }
        }
        _ => (Vec::new(), String::new()),
    }
}

/// How much of a client file the checks read: a wheel's `WHEEL` file whole (up to
/// [`READ_CAP`]), of any other its ELF header.
fn cap_for(rel: &str) -> u64 {
    if rel.ends_with("/WHEEL") && rel.contains(".dist-info/") {
        READ_CAP
    } else {
        64
    }
}

/// The client's files as the layer will hold them — paths relative to its directory, with
/// their first bytes ([`cap_for`]) — read from the directory, or from the wheels' entries
/// (at most [`MAX_FILES`] in all).
fn client_heads(c: &RuntimeClient) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    use std::io::Read;
    if !c.is_wheels() {
        return Ok(files_under(&c.source)
            .into_iter()
            .map(|p| {
                let rel = p
                    .strip_prefix(&c.source)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned();
                let h = head(&p, cap_for(&rel));
                (rel, h)
            })
            .collect());
    }
    let wheels = if c.source.is_file() {
        vec![c.source.clone()]
    } else {
        crate::layer::source::wheels_in(&c.source).map_err(std::io::Error::other)?
    };
    let mut out = Vec::new();
    for w in wheels {
        let f = std::fs::File::open(&w)?;
        let mut z = zip::ZipArchive::new(f)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", w.display())))?;
        for i in 0..z.len() {
            if out.len() >= MAX_FILES {
                return Ok(out);
            }
            let e = z.by_index(i).map_err(std::io::Error::other)?;
            if e.is_dir() {
                continue;
            }
            let rel = e.name().map_err(std::io::Error::other)?.into_owned();
            let mut h = Vec::new();
            e.take(cap_for(&rel)).read_to_end(&mut h)?;
            out.push((rel, h));
        }
    }
    Ok(out)
}

/// L009 and L010 on the client's files on this machine: ELF files for another CPU, wheels
/// (`*.dist-info/WHEEL` tags) and extension modules (`.cpython-3NN-` names) for another
/// Python than the base's.
fn client_native(c: &RuntimeClient, arch: &str, py: Option<(u32, u32)>, fix: &str) -> Vec<Finding> {
    let mut v = Vec::new();
    let (mut elf_bad, mut tag_bad) = (None, None);
    let dest = c.layer().dest;
    for (rel, h) in client_heads(c).unwrap_or_default() {
        let at = format!("{dest}/{rel}");
        let name = rel.rsplit('/').next().unwrap_or(&rel).to_owned();
        if name == "WHEEL" && rel.contains(".dist-info/") {
            let text = String::from_utf8_lossy(&h).into_owned();
            let tags: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("Tag:"))
                .map(str::trim)
                .collect();
            if !tags.is_empty()
                && !tags
                    .iter()
                    .any(|t| super::native::tag_fits(t, py, super::elf::gnu_arch(arch)))
            {
                tag_bad.get_or_insert((
                    at.clone(),
                    format!("a wheel tagged {} does not fit", tags.join(", ")),
                ));
            }
            continue;
        }
        if let (Some((3, minor)), Some(tag)) = (py, name.split(".cpython-").nth(1)) {
            let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
            if name.ends_with(".so")
                && digits
                    .strip_prefix('3')
                    .is_some_and(|m| m != minor.to_string())
            {
                tag_bad.get_or_insert((
                    at.clone(),
                    format!(
                        "an extension module for CPython {}.{}",
                        &digits[..1],
                        &digits[1..]
                    ),
                ));
            }
        }
        if super::elf::is_elf(&h)
            && let Ok(hdr) = super::elf::parse(&h)
            && !super::elf::fits(&hdr, arch)
        {
            elf_bad.get_or_insert((at, super::elf::describe(&hdr)));
        }
    }
    let image = format!("linux/{arch} ({})", super::elf::gnu_arch(arch));
    if let Some((at, what)) = elf_bad {
        v.push(Finding::at(
            Rule::L009,
            &at,
            format!("the runtime client's native code is {what}, not for the image's {image}: fetch it for the image's platform with `{fix}`"),
        ));
    }
    if let Some((at, what)) = tag_bad {
        let base = py.map_or("an unknown Python".to_owned(), |(a, b)| {
            format!("the base's Python {a}.{b}")
        });
        v.push(Finding::at(
            Rule::L010,
            &at,
            format!("{what} {base} on {image}: fetch the client for it with `{fix}`"),
        ));
    }
    v
}

/// What [`prepare`] found: the spec with its config completed, and the runtime the client
/// makes.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The build's spec, its config completed for the client.
    pub spec: BuildSpec,
    /// The runtime as the client makes it (for the handler rule after the build).
    pub runtime: RuntimeInfo,
}

/// Before any layer is built: find the interpreter in the base (L020), look at the client's
/// files (L021, L009, L010), and complete the config. Errors stop the build (a client that
/// cannot start is no use anywhere) unless `--no-lambda-check`, which turns them into lines
/// for `log`; an interpreter that is missing while no ENTRYPOINT is given always stops it.
pub fn prepare(
    spec: &BuildSpec,
    base: &crate::image::Image,
    cache: &Path,
    log: &mut dyn FnMut(String),
) -> Result<Prepared> {
    let mut spec = spec.clone();
    let Some(c) = spec.runtime_client.clone() else {
        return Ok(Prepared {
            spec,
            runtime: RuntimeInfo::default(),
        });
    };
    let shown = spec.base.to_string();
    let fs = base_fs(base, cache, &shown)?;
    let arch = spec.platform.to_string();
    let arch = arch.rsplit('/').next().unwrap_or(&arch).to_owned();
    let mut p = Process::of(&base.config);
    if let Some(path) = spec.config.env.get("PATH") {
        p.env.push(format!("PATH={path}"));
    }
    let interp = find_interpreter(&fs, c.language, &p.path_var());
    let py_shown = interp
        .as_ref()
        .and_then(|i| i.python)
        .map(|(a, b)| format!("{a}.{b}"));
    let fetch =
        c.language
            .fetch_command(&c.shown, super::elf::gnu_arch(&arch), py_shown.as_deref());
    let mut findings = Vec::new();
    if interp.is_none() {
        findings.push(Finding::new(
            Rule::L020,
            format!(
                "the base {shown} has no {} on its PATH ({}), so the {} runtime client cannot start: use a base that has it (for example a `{}` image), or set [config] entrypoint to the interpreter",
                c.language.interpreters().join(" or "),
                p.path_var(),
                c.language.name(),
                match c.language {
                    Language::Python => "python:3.12-slim",
                    Language::Node => "node:22-slim",
                    Language::Java => "eclipse-temurin:21-jre",
                }
            ),
        ));
    }
    let (missing, node_main) = client_files(&c, &c.shown, &fetch);
    let have_files = missing.is_empty();
    findings.extend(missing);
    if have_files {
        let py = interp.as_ref().and_then(|i| i.python);
        findings.extend(client_native(&c, &arch, py, &fetch));
    }
    let fatal = interp.is_none() && spec.config.entrypoint.is_none();
    report(&findings, &shown, spec.lambda_check || fatal, log)?;
    let runtime = RuntimeInfo {
        family: Some(c.language.family()),
        python: interp.as_ref().and_then(|i| i.python),
        name: None,
    };
    if let Some(i) = &interp {
        log(format!(
            "runtime client: {} {} with {}",
            c.language.name(),
            c.language.package(),
            i.path
        ));
        complete_config(&mut spec, c.language, i, &node_main);
    }
    Ok(Prepared { spec, runtime })
}

/// Errors stop the build when `stop`; otherwise every finding goes to `log`.
fn report(
    findings: &[Finding],
    shown: &str,
    stop: bool,
    log: &mut dyn FnMut(String),
) -> Result<()> {
    let errors: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == super::Severity::Error)
        .map(|f| format!("  {f}"))
        .collect();
    if stop && !errors.is_empty() {
        return Err(Error::Lambda {
            reference: shown.to_owned(),
            message: format!(
                "cannot take the runtime client ([function] runtime_client), so nothing was written:\n{}",
                errors.join("\n")
            ),
        });
    }
    for f in findings {
        log(format!("runtime client: {f}"));
    }
    Ok(())
}

/// After the layers are built: the handler (CMD\[0\]) resolves on the client's module path
/// (L014), judged on the image's merged file system.
pub fn check_built(
    p: &Prepared,
    rendered: &crate::image::Rendered,
    config: &oci_spec::image::ImageConfiguration,
    cache: &Path,
    log: &mut dyn FnMut(String),
) -> Result<()> {
    let shown = p.spec.to.to_string();
    let mut fs = FileSystem::new();
    for l in &rendered.layers {
        let index = l
            .fs_index(cache)
            .map_err(|e| Error::image(&shown, format!("layer {}: {e}", l.digest)))?;
        fs.apply_items(index.items);
    }
    let process = Process::of(config);
    let Some(h) = process.cmd.first().filter(|h| !h.is_empty()) else {
        return Ok(());
    };
    let findings = super::handler::check(&fs, &process, &p.runtime, h, TASK_ROOT);
    report(&findings, &shown, p.spec.lambda_check, log)
}

#[cfg(test)]
mod tests {
    use super::super::fs::Node;
    use super::*;

    fn spec_with(lang: Language, source: &Path) -> BuildSpec {
        let mut s = BuildSpec::resolve(None, &Default::default(), Path::new("/")).unwrap();
        s.runtime_client = Some(RuntimeClient {
            language: lang,
            source: source.to_owned(),
            shown: "ric".into(),
        });
        s.config.cmd = Some(vec!["app.handler".into()]);
        s
    }

    fn interp(path: &str) -> Interpreter {
        Interpreter {
            path: path.into(),
            python: None,
        }
    }

    /// Node: the `bin` script of aws-lambda-ric's package.json, started with the base's node;
    /// Java: the client's main class on a classpath of the client's jars and the code's.
    #[test]
    fn node_and_java_clients_are_started_as_their_readmes_say() {
        let d = tempfile::tempdir().unwrap();
        let pkg = d.path().join("node_modules/aws-lambda-ric");
        std::fs::create_dir_all(pkg.join("bin")).unwrap();
        let c = RuntimeClient {
            language: Language::Node,
            source: d.path().to_owned(),
            shown: "ric".into(),
        };
        let (missing, _) = client_files(&c, "ric", "npm install --prefix ric aws-lambda-ric");
        assert_eq!(missing[0].rule, Rule::L021);
        assert!(
            missing[0].message.contains("npm install --prefix ric"),
            "{:?}",
            missing
        );
        std::fs::write(
            pkg.join("package.json"),
            r#"{"name":"aws-lambda-ric","bin":{"aws-lambda-ric":"bin/index.mjs"}}"#,
        )
        .unwrap();
        std::fs::write(pkg.join("bin/index.mjs"), "").unwrap();
        let (missing, main) = client_files(&c, "ric", "");
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(
            main,
            "/var/runtime/node_modules/aws-lambda-ric/bin/index.mjs"
        );
        let mut s = spec_with(Language::Node, d.path());
        complete_config(
            &mut s,
            Language::Node,
            &interp("/usr/local/bin/node"),
            &main,
        );
        assert_eq!(
            s.config.entrypoint.as_deref().unwrap(),
            ["/usr/local/bin/node", main.as_str()]
        );
        assert!(s.config.env["NODE_PATH"].contains("/var/runtime/node_modules"));
        assert_eq!(s.config.workdir.as_deref(), Some("/var/task"));

        let jar = d.path().join("ric.jar");
        std::fs::write(&jar, b"PK").unwrap();
        let c = RuntimeClient {
            language: Language::Java,
            source: jar.clone(),
            shown: "ric.jar".into(),
        };
        assert!(client_files(&c, "ric.jar", "").0.is_empty());
        let mut s = spec_with(Language::Java, &jar);
        // What [config] sets wins.
        s.config.workdir = Some("/srv".into());
        complete_config(&mut s, Language::Java, &interp("/usr/bin/java"), "");
        let e = s.config.entrypoint.unwrap();
        assert_eq!(e[0], "/usr/bin/java");
        assert_eq!(e[1], "-cp");
        assert!(e[2].starts_with("/var/runtime/lib/*:/var/task"), "{e:?}");
        assert_eq!(e[3], JAVA_MAIN);
        assert_eq!(s.config.workdir.as_deref(), Some("/srv"));
        assert_eq!(s.config.env["LAMBDA_TASK_ROOT"], "/var/task");
    }

    #[test]
    fn interpreters_and_their_versions_are_found_on_path() {
        let mut fs = FileSystem::new();
        fs.insert("usr/bin/python3.11", Node::file(0o755, b"\x7fELF"));
        fs.insert("usr/bin/python3", Node::symlink("python3.11"));
        fs.insert(
            "usr/local/bin/python3",
            Node::file(0o644, b"not executable"),
        );
        let i = find_interpreter(&fs, Language::Python, "/usr/local/bin:/usr/bin").unwrap();
        assert_eq!(i.path, "/usr/bin/python3");
        assert_eq!(i.python, Some((3, 11)));
        assert!(find_interpreter(&fs, Language::Node, "/usr/local/bin:/usr/bin").is_none());

        // `python` with no version in its name: the standard library beside it tells.
        let mut fs = FileSystem::new();
        fs.insert("opt/py/bin/python", Node::file(0o755, b"\x7fELF"));
        fs.insert("opt/py/lib/python3.12/os.py", Node::file(0o644, b""));
        let i = find_interpreter(&fs, Language::Python, "/opt/py/bin").unwrap();
        assert_eq!(
            (i.path.as_str(), i.python),
            ("/opt/py/bin/python", Some((3, 12)))
        );
    }
}
