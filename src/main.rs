//! The `lamina` command line: parsing and printing over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use lamina::progress::Progress;
use lamina::reference::ImageRef;
use lamina::registry::Options;
use lamina::spec::{BuildSpec, Overrides};

#[derive(Parser)]
#[command(
    name = "lamina",
    version,
    about = "Daemonless, reproducible OCI images for AWS Lambda"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from lamina.toml and flags, and write it to the destination.
    Build(Box<BuildArgs>),
    /// Show an image's manifest, config, layers, platform and sizes.
    Inspect(InspectArgs),
    /// Copy an image (same digest) to a registry: lamina push oci:out/fn:latest docker://REF
    Push(CopyArgs),
    /// Copy one platform of an image from a registry: lamina pull docker://REF oci:DIR
    Pull(CopyArgs),
    /// Check credentials against a registry and store them in the docker config.
    Login(LoginArgs),
    /// Write a commented starter lamina.toml for the function in a directory.
    Init(InitArgs),
    /// Check an image against what Lambda accepts (rules L001-L008); non-zero exit on errors.
    Check(CheckArgs),
    /// Write a Lambda .zip deployment package (or Lambda layer zip) from lamina.toml, flags or
    /// an image.
    Zip(Box<ZipArgs>),
    /// Run a function image locally as Lambda does (Runtime API inside, invoke API on
    /// 127.0.0.1:PORT), isolated with namespaces, no Docker.
    Run(Box<RunArgs>),
    /// Run a function image for one invocation and print its response; non-zero exit when
    /// the invocation fails.
    Invoke(Box<InvokeArgs>),
}

#[derive(Args, Clone)]
struct RegistryArgs {
    /// Allow plain HTTP and unverified TLS for this registry (HOST[:PORT]). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registry: Vec<String>,
    /// Trust the PEM certificates in FILE too. Repeatable.
    #[arg(long = "ca-cert", value_name = "FILE")]
    ca_cert: Vec<PathBuf>,
    /// Blobs transferred in parallel.
    #[arg(long, value_name = "N", default_value_t = 4)]
    jobs: usize,
    /// Attempts after the first on connection errors, 408, 429 and 5xx.
    #[arg(long, value_name = "N", default_value_t = 5)]
    retries: u32,
    /// Upload chunk size in bytes (at least 5 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = lamina::registry::DEFAULT_CHUNK)]
    chunk_size: u64,
    /// Reach a registry's API at URL instead ([REGISTRY=]URL; without REGISTRY, every ECR registry).
    #[arg(long = "registry-endpoint", value_name = "[REGISTRY=]URL")]
    registry_endpoint: Vec<String>,
    /// AWS profile for ECR (default: AWS_PROFILE, then the default chain).
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// Create a missing ECR repository instead of failing.
    #[arg(long)]
    create_repo: bool,
    /// Tag mutability of a repository lamina creates: MUTABLE or IMMUTABLE.
    #[arg(long, value_name = "MUTABILITY", value_parser = ["MUTABLE", "IMMUTABLE"])]
    tag_mutability: Option<String>,
    /// Enable scan on push for a repository lamina creates.
    #[arg(long)]
    scan_on_push: bool,
}

impl RegistryArgs {
    fn options(&self, quiet: bool) -> anyhow::Result<Options> {
        if self.chunk_size < lamina::registry::MIN_CHUNK {
            anyhow::bail!(
                "--chunk-size {}: chunks must be at least {} bytes (5 MiB), as ECR requires",
                self.chunk_size,
                lamina::registry::MIN_CHUNK
            );
        }
        if self.jobs == 0 {
            anyhow::bail!("--jobs must be at least 1");
        }
        let endpoints = self
            .registry_endpoint
            .iter()
            .map(|e| match e.split_once('=') {
                Some((r, url)) => (Some(r.to_owned()), url.to_owned()),
                None => (None, e.clone()),
            })
            .collect();
        Ok(Options {
            endpoints,
            ecr: lamina::registry::ecr::EcrOptions {
                profile: self.profile.clone(),
                create_repo: self.create_repo,
                tag_mutability: self.tag_mutability.clone(),
                scan_on_push: self.scan_on_push.then_some(true),
            },
            insecure: self.insecure_registry.clone(),
            ca_certs: self.ca_cert.clone(),
            jobs: self.jobs,
            retries: self.retries,
            chunk_size: self.chunk_size,
            progress: Progress::for_stderr(quiet),
            ..Options::default()
        })
    }
}

#[derive(Args)]
struct CopyArgs {
    /// Source image.
    source: String,
    /// Destination image.
    destination: String,
    /// Platform to pick from a multi-platform source.
    #[arg(long)]
    platform: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress on stderr.
    #[arg(short, long)]
    quiet: bool,
    /// push: push even when the Lambda checks find errors.
    #[arg(long)]
    no_lambda_check: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
struct CheckArgs {
    /// The image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, docker://REF.
    image: String,
    /// Platform to pick from a multi-platform image (without it, an index is an L001 error).
    #[arg(long)]
    platform: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
struct InitArgs {
    /// Lambda runtime (python3.13, nodejs22.x, provided.al2023, ...); guessed from the files if unset.
    #[arg(long)]
    runtime: Option<String>,
    /// The function's directory.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Replace an existing lamina.toml.
    #[arg(long)]
    force: bool,
}

fn init(a: InitArgs) -> anyhow::Result<()> {
    let path = a.dir.join("lamina.toml");
    if path.exists() && !a.force {
        anyhow::bail!(
            "{} already exists (use --force to replace it)",
            path.display()
        );
    }
    let text = lamina::spec::function::starter_spec(a.runtime.as_deref(), &a.dir)
        .map_err(anyhow::Error::msg)?;
    let dir = if a.dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        a.dir.as_path()
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.persist(&path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[derive(Args)]
struct LoginArgs {
    /// The registry: HOST[:PORT].
    registry: String,
    #[arg(short, long)]
    username: String,
    /// Read the password from standard input (the only way: never on the command line).
    #[arg(long, required = true)]
    password_stdin: bool,
    #[command(flatten)]
    registry_args: RegistryArgs,
}

#[derive(Args)]
struct BuildArgs {
    /// The build spec (default: ./lamina.toml if it exists).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    file: Option<PathBuf>,
    /// Base image: scratch, oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE,
    /// docker://REF.
    #[arg(long, value_name = "REF")]
    base: Option<String>,
    /// linux/amd64 (x86_64) or linux/arm64 (aarch64).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Destination: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG],
    /// docker://REF (build and push).
    #[arg(long, value_name = "REF")]
    to: Option<String>,
    /// Add a layer with SOURCE's files at DEST (after the spec's layers). Repeatable.
    #[arg(long = "layer", value_name = "SOURCE:DEST")]
    layers: Vec<String>,
    /// Delete a path of the base with a whiteout. Repeatable.
    #[arg(long = "delete", value_name = "PATH")]
    deletes: Vec<String>,
    /// ENTRYPOINT: a JSON array, or one string.
    #[arg(long, value_name = "ARGV")]
    entrypoint: Option<String>,
    /// CMD (for Lambda: the handler): a JSON array, or one string.
    #[arg(long, value_name = "ARGV")]
    cmd: Option<String>,
    /// Set an environment variable (merged over the base's). Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// WORKDIR in the image.
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// USER the image runs as.
    #[arg(long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Config label. Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Manifest annotation. Repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Seconds since the epoch for every timestamp, or `now` (default: SOURCE_DATE_EPOCH, else 0).
    #[arg(long, value_name = "SECONDS|now")]
    timestamp: Option<String>,
    /// gzip level, 0-9.
    #[arg(long, value_name = "N")]
    compression_level: Option<u32>,
    /// Make files under /var/task and /opt readable (and executables, directories usable) by
    /// others in the layers lamina writes, as Lambda's non-root user needs.
    #[arg(long)]
    fix_permissions: bool,
    /// With a docker:// destination: push even when the Lambda checks find errors.
    #[arg(long)]
    no_lambda_check: bool,
    /// A Lambda function .zip as the code: shorthand for --layer ZIP:/var/task.
    #[arg(long, value_name = "ZIP")]
    from_zip: Option<PathBuf>,
    /// A Lambda layer .zip the function uses: shorthand for --layer ZIP:/opt. Repeatable.
    #[arg(long = "lambda-layer-zip", value_name = "ZIP")]
    lambda_layer_zips: Vec<PathBuf>,
    /// Rebuild every layer instead of reusing those whose inputs did not change.
    #[arg(long)]
    no_cache: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
struct InspectArgs {
    /// The image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG].
    image: String,
    /// Platform to pick from a multi-platform image.
    #[arg(long)]
    platform: Option<String>,
    /// Print JSON (report, manifest and config documents).
    #[arg(long)]
    json: bool,
    /// Print only the manifest bytes, exactly as stored.
    #[arg(long, conflicts_with = "json")]
    raw: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

fn build(a: BuildArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let file = match a.file {
        Some(f) => Some(f),
        None => Some(PathBuf::from("lamina.toml")).filter(|p| p.is_file()),
    };
    let spec_file = match &file {
        Some(f) => Some((f.as_path(), lamina::spec::read_spec_file(f)?)),
        None => None,
    };
    let mut layers = a.layers;
    for (z, dest) in a
        .lambda_layer_zips
        .iter()
        .map(|z| (z, "/opt"))
        .chain(a.from_zip.iter().map(|z| (z, "/var/task")))
    {
        if !z.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) {
            anyhow::bail!(
                "{}: --from-zip and --lambda-layer-zip take .zip files",
                z.display()
            );
        }
        layers.push(format!("{}:{dest}", z.display()));
    }
    let ov = Overrides {
        base: a.base,
        platform: a.platform,
        to: a.to,
        layers,
        deletes: a.deletes,
        entrypoint: a.entrypoint,
        cmd: a.cmd,
        env: a.env,
        workdir: a.workdir,
        user: a.user,
        labels: a.labels,
        annotations: a.annotations,
        timestamp: a.timestamp,
        compression_level: a.compression_level,
        fix_permissions: a.fix_permissions,
        no_lambda_check: a.no_lambda_check,
        no_cache: a.no_cache,
    };
    let sde = std::env::var("SOURCE_DATE_EPOCH").ok();
    let spec = BuildSpec::resolve(spec_file, &ov, &cwd, sde.as_deref())?;
    let quiet = a.quiet;
    let mut log = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    let started = std::time::Instant::now();
    let opts = a.registry.options(quiet)?;
    let report = lamina::build::build(&spec, &opts, &mut log)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        log(format!(
            "wrote {} ({}, {} layers) in {:.2}s",
            shown(&spec.to, &cwd),
            report.platform,
            report.layers.len(),
            started.elapsed().as_secs_f64()
        ));
        println!("{}", report.digest);
    }
    Ok(())
}

/// A reference with its path shown relative to the current directory when it is below it.
fn shown(r: &ImageRef, cwd: &Path) -> String {
    let s = r.to_string();
    let prefix = format!("{}/", cwd.display());
    s.replacen(&prefix, "", 1)
}

fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let r: ImageRef = a.image.parse().map_err(anyhow::Error::msg)?;
    let r = r.relative_to(&cwd);
    let platform = parse_platform(a.platform.as_deref())?;
    let i = lamina::build::inspect(&r, platform, &a.registry.options(true)?)?;
    if a.raw {
        use std::io::Write;
        std::io::stdout().write_all(&i.manifest_bytes())?;
        return Ok(());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&i)?);
        return Ok(());
    }
    let rep = &i.report;
    println!("image     {}", shown(&r, &cwd));
    println!("digest    {}", rep.digest);
    println!("type      {}", rep.media_type);
    println!("platform  {}", rep.platform);
    println!(
        "config    {} ({} bytes)",
        rep.config.digest, rep.config.size
    );
    let c = i.image_config.get("config");
    for (label, key) in [
        ("entrypoint", "Entrypoint"),
        ("cmd", "Cmd"),
        ("workdir", "WorkingDir"),
        ("user", "User"),
    ] {
        if let Some(v) = c.and_then(|c| c.get(key)) {
            println!("{label:<9} {v}");
        }
    }
    if let Some(env) = c.and_then(|c| c.get("Env")).and_then(|e| e.as_array()) {
        for e in env {
            println!("env       {}", e.as_str().unwrap_or_default());
        }
    }
    let total: u64 = rep.layers.iter().map(|l| l.size).sum();
    println!("layers    {} ({total} bytes compressed)", rep.layers.len());
    for l in &rep.layers {
        println!("  {} {:>12}  {}", l.digest, l.size, l.media_type);
    }
    Ok(())
}

fn parse_platform(p: Option<&str>) -> anyhow::Result<Option<lamina::platform::Platform>> {
    p.map(str::parse)
        .transpose()
        .map_err(|e: String| anyhow::anyhow!("--platform: {e}"))
}

fn parse_ref(s: &str, cwd: &Path) -> anyhow::Result<ImageRef> {
    let r: ImageRef = s.parse().map_err(anyhow::Error::msg)?;
    Ok(r.relative_to(cwd))
}

fn copy(a: CopyArgs, pull: bool) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let src = parse_ref(&a.source, &cwd)?;
    let dest = parse_ref(&a.destination, &cwd)?;
    if pull && !matches!(src, ImageRef::Docker(_)) {
        anyhow::bail!(
            "pull reads from a registry: the source must be docker://REF (use push to send a local image)"
        );
    }
    if !pull && !matches!(dest, ImageRef::Docker(_)) {
        anyhow::bail!("push writes to a registry: the destination must be docker://REF");
    }
    let platform = parse_platform(a.platform.as_deref())?;
    let opts = a.registry.options(a.quiet)?;
    let report = lamina::build::copy(&src, &dest, platform, &opts, !a.no_lambda_check)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if !a.quiet {
            eprintln!("wrote {} ({})", shown(&dest, &cwd), report.platform);
        }
        println!("{}", report.digest);
    }
    Ok(())
}

fn check(a: CheckArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let r = parse_ref(&a.image, &cwd)?;
    let platform = parse_platform(a.platform.as_deref())?;
    let report = lamina::lambda::check(&r, platform, &a.registry.options(true)?)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.findings {
            println!("{f}");
        }
    }
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let errors = report.errors().count();
    let warnings = count(report.warnings().count(), "warning");
    let what = format!(
        "{} ({}{})",
        shown(&r, &cwd),
        report.digest.as_deref().unwrap_or("index"),
        report
            .platform
            .as_deref()
            .map(|p| format!(", {p}"))
            .unwrap_or_default()
    );
    if errors > 0 {
        let errors = count(errors, "error");
        anyhow::bail!("{what} fails the Lambda checks: {errors}, {warnings}");
    }
    eprintln!("{what} passes the Lambda checks ({warnings})");
    Ok(())
}

fn login(a: LoginArgs) -> anyhow::Result<()> {
    use std::io::Read;
    let registry = a
        .registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    let mut opts = a.registry_args.options(true)?;
    opts.credentials = Some(lamina::registry::auth::Credentials {
        username: a.username.clone(),
        password,
    });
    let path = lamina::registry::login(&registry, &opts)?;
    eprintln!(
        "login to {registry} as {} succeeded; saved in {}",
        a.username,
        path.display()
    );
    Ok(())
}

#[derive(Args)]
struct ZipArgs {
    /// The build spec (default: ./lamina.toml if it exists): its layers under /var/task make the zip.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    file: Option<PathBuf>,
    /// Add SOURCE's files at DEST (after the spec's layers). Repeatable.
    #[arg(long = "layer", value_name = "SOURCE:DEST")]
    layers: Vec<String>,
    /// Take the files from an image's /var/task (/opt with --lambda-layer) instead.
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["file", "layers", "fix_permissions"])]
    from: Option<String>,
    /// Platform to pick from a multi-platform --from image.
    #[arg(long, requires = "from")]
    platform: Option<String>,
    /// The zip to write (default: function.zip, or layer.zip, beside the spec).
    #[arg(long, value_name = "FILE")]
    to: Option<PathBuf>,
    /// Write a Lambda layer zip from what goes under /opt (paths relative to /opt).
    #[arg(long)]
    lambda_layer: bool,
    /// A Lambda layer zip the function runs with, counted in the 250 MiB limit. Repeatable.
    #[arg(long = "with-layer", value_name = "ZIP")]
    with_layers: Vec<PathBuf>,
    /// Seconds since the epoch for every entry, or `now` (default: SOURCE_DATE_EPOCH, else 0;
    /// zips cannot go below 1980-01-01).
    #[arg(long, value_name = "SECONDS|now")]
    timestamp: Option<String>,
    /// deflate level, 0 (store) to 9.
    #[arg(long, value_name = "N")]
    compression_level: Option<u32>,
    /// Make files and directories readable (executables runnable) by others, as for builds.
    #[arg(long)]
    fix_permissions: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No summary on stderr (warnings are still printed).
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

fn zip(a: ZipArgs) -> anyhow::Result<()> {
    use lamina::lambda::package::{self, Package};
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let started = std::time::Instant::now();
    let pkg = if a.lambda_layer {
        Package::Layer
    } else {
        Package::Function
    };
    let file = match (&a.file, &a.from) {
        (Some(f), _) => Some(f.clone()),
        (None, None) => Some(PathBuf::from("lamina.toml")).filter(|p| p.is_file()),
        (None, Some(_)) => None,
    };
    let spec_file = match &file {
        Some(f) => Some((f.as_path(), lamina::spec::read_spec_file(f)?)),
        None => None,
    };
    let ov = Overrides {
        layers: a.layers,
        timestamp: a.timestamp,
        compression_level: a.compression_level,
        fix_permissions: a.fix_permissions,
        ..Overrides::default()
    };
    let sde = std::env::var("SOURCE_DATE_EPOCH").ok();
    let spec = BuildSpec::resolve(spec_file, &ov, &cwd, sde.as_deref())?;
    let contents = match &a.from {
        Some(image) => {
            let r = parse_ref(image, &cwd)?;
            let platform = parse_platform(a.platform.as_deref())?;
            package::from_image(&r, platform, pkg, &a.registry.options(a.quiet)?)?
        }
        None => {
            let layers = match pkg {
                Package::Function => &spec.zip_layers,
                Package::Layer => &spec.layers,
            };
            package::from_layers(layers, pkg, spec.fix_permissions)?
        }
    };
    let name = match pkg {
        Package::Function => "function.zip",
        Package::Layer => "layer.zip",
    };
    let spec_dir = file
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(Path::new(""));
    let to = cwd.join(a.to.unwrap_or_else(|| spec_dir.join(name)));
    let opts = package::ZipOptions {
        mtime: spec.timestamp,
        compression_level: spec.compression_level,
        with_layers: a.with_layers.iter().map(|p| cwd.join(p)).collect(),
    };
    let report = package::write(contents, &to, &opts)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if !a.quiet {
        let shown = to.strip_prefix(&cwd).unwrap_or(&to);
        eprintln!(
            "wrote {} ({} entries, {} bytes, {} bytes unzipped) in {:.2}s",
            shown.display(),
            report.entries,
            report.size,
            report.unzipped,
            started.elapsed().as_secs_f64()
        );
    }
    println!("{}", report.digest);
    Ok(())
}

#[derive(Args)]
struct FunctionArgs {
    /// The image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, docker://REF.
    image: String,
    /// This machine's platform, picked from a multi-platform image (another one is refused:
    /// there is no emulation).
    #[arg(long)]
    platform: Option<String>,
    /// Seconds an invocation may run, as the function's Lambda timeout (1-900).
    #[arg(long, value_name = "SECS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=900))]
    timeout: u32,
    /// Memory size in MB, given to the function as Lambda gives it (not enforced).
    #[arg(long, value_name = "MB", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(128..=10240))]
    memory: u32,
    /// Set an environment variable of the function (KEY alone passes lamina's own). Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Isolate with this OCI runtime (crun, runc) instead of lamina's own namespaces.
    #[arg(long, value_name = "RUNTIME")]
    runtime: Option<String>,
    /// The function's name (AWS_LAMBDA_FUNCTION_NAME, and in its ARN).
    #[arg(long, value_name = "NAME", default_value = "function")]
    function_name: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    function: FunctionArgs,
    /// Port of the invoke API on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 9000)]
    port: u16,
}

#[derive(Args)]
struct InvokeArgs {
    #[command(flatten)]
    function: FunctionArgs,
    /// The event: a JSON file, or - for standard input (default: {}).
    #[arg(long, value_name = "FILE")]
    event: Option<PathBuf>,
}

/// Read the image and unpack it: what `run` and `invoke` share.
fn prepare_function(
    a: &FunctionArgs,
) -> anyhow::Result<(lamina::run::Prepared, lamina::run::RunOptions)> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let r = parse_ref(&a.image, &cwd)?;
    let platform = parse_platform(a.platform.as_deref())?;
    let mut env = Vec::new();
    for e in &a.env {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.push((k.to_owned(), v.to_owned())),
            None if !e.is_empty() => match std::env::var(e) {
                Ok(v) => env.push((e.clone(), v)),
                Err(_) => anyhow::bail!("--env {e}: not set in lamina's environment"),
            },
            _ => anyhow::bail!("--env `{e}`: expected KEY=VALUE"),
        }
    }
    let opts = lamina::run::RunOptions {
        timeout: std::time::Duration::from_secs(a.timeout.into()),
        memory_mb: a.memory,
        env,
        isolation: match &a.runtime {
            Some(rt) => lamina::run::Isolation::Oci(rt.clone()),
            None => lamina::run::Isolation::Namespaces,
        },
        function_name: a.function_name.clone(),
    };
    let prepared = lamina::run::prepare(&r, platform, &a.registry.options(false)?, &mut |s| {
        eprintln!("lamina: {s}")
    })?;
    if let Some(u) = &prepared.user {
        eprintln!(
            "lamina: the image's USER {u} is not used: the function runs as root inside the sandbox (you, outside)"
        );
    }
    Ok((prepared, opts))
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    let (prepared, opts) = prepare_function(&a.function)?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], a.port));
    lamina::run::serve(&prepared, &opts, listen, &mut |addr| {
        eprintln!(
            "lamina: invoke with: curl -d '{{}}' http://{addr}/2015-03-31/functions/function/invocations"
        )
    })?;
    Ok(())
}

fn invoke(a: InvokeArgs) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let (prepared, opts) = prepare_function(&a.function)?;
    let (raw, what) = match &a.event {
        None => (b"{}".to_vec(), "the event".to_owned()),
        Some(p) if p.as_os_str() == "-" => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("reading the event from standard input")?;
            (b, "the event on standard input".to_owned())
        }
        Some(p) => (
            std::fs::read(p).with_context(|| format!("reading the event {}", p.display()))?,
            p.display().to_string(),
        ),
    };
    let payload = lamina::run::event_payload(&raw).map_err(|m| anyhow::anyhow!("{what}: {m}"))?;
    let outcome = lamina::run::invoke_once(
        &prepared,
        &opts,
        lamina::run::Invoke {
            payload,
            ..Default::default()
        },
    )?;
    let mut out = std::io::stdout().lock();
    out.write_all(&outcome.body)?;
    out.write_all(b"\n")?;
    out.flush()?;
    if let Some(t) = outcome.error_type {
        anyhow::bail!("the invocation failed: {t} (X-Amz-Function-Error: Unhandled)");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Build(a) => build(*a),
        Command::Inspect(a) => inspect(a),
        Command::Push(a) => copy(a, false),
        Command::Pull(a) => copy(a, true),
        Command::Login(a) => login(a),
        Command::Init(a) => init(a),
        Command::Check(a) => check(a),
        Command::Zip(a) => zip(*a),
        Command::Run(a) => run(*a),
        Command::Invoke(a) => invoke(*a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
