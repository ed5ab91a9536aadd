//! HTTPS end to end: `drove serve --tls-cert --tls-key` with a throwaway CA and certificate the
//! test makes, a `drove worker` and `drove submit --wait` reaching it over https:// with
//! `--ca-file`, and what happens without the CA or in plain HTTP.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::support::*;

/// A CA and a certificate for `localhost` and 127.0.0.1 signed by it, as PEM files in `dir`:
/// (ca.pem, cert.pem, key.pem).
pub fn throwaway_certs(dir: &Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Drove throwaway test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    (write("ca.pem", ca_cert.pem()), write("cert.pem", cert.pem()), write("key.pem", key.serialize_pem()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serve_worker_and_cli_with_a_throwaway_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = throwaway_certs(dir.path());
    let server = Server::start(&dir.path().join("d.db"), &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    let url = format!("https://localhost:{}", server.port);

    // A worker over https, and a submit that waits for its result.
    let _worker = Worker::start(
        &url,
        "tls",
        2,
        &["--ca-file", &ca],
        &["sh", "-c", "cat >/dev/null; echo '{\"over\":\"tls\"}'"],
    );
    let out = Command::new(BIN)
        .args(["submit", "--server", &url, "--ca-file", &ca, "tls", "1", "--wait"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"{"over":"tls"}"#);

    // Without the CA the certificate is not trusted: the CLI says so and fails.
    let out =
        Command::new(BIN).args(["queues", "--server", &url]).env_remove("DROVE_CA_FILE").output().unwrap();
    assert!(!out.status.success(), "an untrusted certificate was accepted");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("certificate") || err.contains("tls") || err.contains("did not answer"), "{err}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/1.1 200"), "plain HTTP was answered: {}", String::from_utf8_lossy(&got));

    // A certificate file that is not one is refused at start, naming the file.
    std::fs::write(dir.path().join("bad.pem"), "not a certificate").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--db"])
        .arg(dir.path().join("e.db"))
        .args(["--bind", "127.0.0.1:0", "--tls-cert"])
        .arg(dir.path().join("bad.pem"))
        .args(["--tls-key", &key])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.pem"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
