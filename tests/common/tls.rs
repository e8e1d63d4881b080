//! TLS material for the registry peers, generated at test time with the openssl CLI.

use std::fs;
use std::path::{Path, PathBuf};

use super::run_tool_ok;

/// A CA and a server certificate for `127.0.0.1` and `localhost` signed by it.
pub struct TlsFiles {
    /// PEM CA certificate (for `lamina --ca-cert`).
    pub ca_cert: PathBuf,
    /// A directory holding only `ca.crt` (for skopeo `--cert-dir`).
    pub cert_dir: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// A CA profile (`v3_ca`) and a server profile (`v3_server`) for 127.0.0.1 and localhost.
const OPENSSL_CNF: &str = "[req]\n\
    distinguished_name = dn\n\
    prompt = no\n\
    [dn]\n\
    CN = lamina test CA\n\
    [v3_ca]\n\
    basicConstraints = critical,CA:TRUE\n\
    keyUsage = critical,keyCertSign,cRLSign\n\
    subjectKeyIdentifier = hash\n\
    [v3_server]\n\
    basicConstraints = critical,CA:FALSE\n\
    keyUsage = critical,digitalSignature,keyEncipherment\n\
    extendedKeyUsage = serverAuth\n\
    subjectAltName = IP:127.0.0.1,DNS:localhost\n\
    subjectKeyIdentifier = hash\n\
    authorityKeyIdentifier = keyid\n";

/// Generate [`TlsFiles`] under `dir` with the openssl CLI (P-256 keys, valid for two days).
pub fn make_tls(dir: &Path) -> TlsFiles {
    fs::create_dir_all(dir).expect("mkdir tls");
    let cnf = dir.join("openssl.cnf");
    fs::write(&cnf, OPENSSL_CNF).expect("write openssl.cnf");
    let cnf_s = cnf.to_str().expect("utf-8 path");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca_args = vec!["req", "-x509", "-new", "-nodes", "-config", cnf_s];
    ca_args.extend_from_slice(&ec);
    ca_args.extend_from_slice(&[
        "-extensions",
        "v3_ca",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run_tool_ok("openssl", &ca_args, None, dir);
    let mut csr_args = vec![
        "req",
        "-new",
        "-nodes",
        "-config",
        cnf_s,
        "-subj",
        "/CN=127.0.0.1",
    ];
    csr_args.extend_from_slice(&ec);
    csr_args.extend_from_slice(&["-keyout", "server.key", "-out", "server.csr"]);
    run_tool_ok("openssl", &csr_args, None, dir);
    run_tool_ok(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            cnf_s,
            "-extensions",
            "v3_server",
            "-out",
            "server.crt",
        ],
        None,
        dir,
    );
    let cert_dir = dir.join("certs.d");
    fs::create_dir_all(&cert_dir).expect("mkdir certs.d");
    fs::copy(dir.join("ca.crt"), cert_dir.join("ca.crt")).expect("copy ca.crt");
    TlsFiles {
        ca_cert: dir.join("ca.crt"),
        cert_dir,
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    }
}
