//! TLS to PostgreSQL: a private PostgreSQL of this machine's installation (initdb into a
//! temporary directory, its own port) that accepts only TLS connections (`hostssl` in its
//! pg_hba.conf), with a throwaway CA and server certificate the test makes. The store opens
//! with `sslmode=verify-full` and `verify-ca` against that CA, and with `require`; it is
//! refused without TLS, with another CA, and by name where verify-full checks the name.
//! Skipped (saying why) where PostgreSQL's binaries are not installed, unless
//! `DROVE_REQUIRE_POSTGRES=1`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drove_postgres::{PostgresOptions, PostgresStore};
use drove_store::{NewJob, Store};

struct PrivatePg {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|e| e.path()).collect();
    versions.sort();
    versions.into_iter().rev().map(|v| v.join("bin")).find(|b| b.join("initdb").exists())
}

fn skip(why: &str) {
    assert!(
        std::env::var("DROVE_REQUIRE_POSTGRES").as_deref() != Ok("1"),
        "DROVE_REQUIRE_POSTGRES=1 but the PostgreSQL TLS test cannot run: {why}"
    );
    eprintln!("PostgreSQL TLS test skipped: {why}");
}

/// Runs a PostgreSQL binary as the postgres user when we are root (initdb refuses root).
fn as_pg(bin: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

struct Certs {
    ca: PathBuf,
    other_ca: PathBuf,
}

fn certs(dir: &Path, data: &Path) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        (cert, Issuer::new(p, key))
    };
    let (ca_cert, issuer) = ca("Drove throwaway test CA");
    let (other_cert, _) = ca("Another throwaway CA");
    let key = KeyPair::generate().unwrap();
    // The certificate names localhost only: connecting to 127.0.0.1 fails verify-full by name.
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(data.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(data.join("server.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other_cert.pem()).unwrap();
    Certs { ca: dir.join("ca.pem"), other_ca: dir.join("other-ca.pem") }
}

fn start() -> Option<(PrivatePg, Certs)> {
    let Some(bin) = pg_bin() else {
        skip("no PostgreSQL installation under /usr/lib/postgresql");
        return None;
    };
    let root = nix_is_root();
    let dir = tempfile::Builder::new().prefix("drove-pg-tls-").tempdir().unwrap();
    let data = dir.path().join("data");
    if root {
        let ok =
            Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status().unwrap().success();
        assert!(ok, "chown of the test directory to postgres");
    }
    let out = as_pg(&bin.join("initdb"), root)
        .args(["--auth=trust", "-U", "postgres", "--no-sync", "-D"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let certs = certs(dir.path(), &data);
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    if root {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    let ok = Command::new("chmod").arg("600").arg(data.join("server.key")).status().unwrap().success();
    assert!(ok);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = as_pg(&bin.join("postgres"), root)
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir.path())
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on", "-c", "fsync=off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pg = PrivatePg { child, port, _dir: dir };
    // Ready when it accepts a connection (pg_isready), within a generous bound.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "1"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the private PostgreSQL did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((pg, certs))
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

async fn open(url: String) -> Result<PostgresStore, drove_store::StoreError> {
    let mut opts = PostgresOptions::new(url);
    opts.pool_size = 2;
    opts.connect_timeout = Duration::from_secs(10);
    PostgresStore::open(opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_talks_tls_as_sslmode_says() {
    let Some((pg, certs)) = start() else { return };
    let port = pg.port;
    let ca = certs.ca.display().to_string();
    let url = |host: &str, query: &str| format!("postgres://postgres@{host}:{port}/postgres?{query}");

    // verify-full against the CA, by the certificate's name: a job goes through.
    let store =
        open(url("localhost", &format!("sslmode=verify-full&sslrootcert={ca}"))).await.expect("verify-full");
    let raw = serde_json::value::to_raw_value(&1).unwrap();
    let sub = store.submit(vec![NewJob::new("tls", raw)], drove_engine_now()).await.expect("submit over TLS");
    assert_eq!(sub.len(), 1);
    store.close().await;

    // verify-ca checks the chain, not the name; require checks nothing but encrypts.
    open(url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")))
        .await
        .expect("verify-ca")
        .close()
        .await;
    open(url("127.0.0.1", "sslmode=require")).await.expect("require").close().await;

    // Refused: without TLS (the server takes only hostssl), another CA, the wrong name.
    let refused = |r: Result<PostgresStore, drove_store::StoreError>, what: &str| match r {
        Ok(_) => panic!("{what}: connected"),
        Err(e) => e.to_string(),
    };
    let e = refused(open(url("127.0.0.1", "sslmode=disable")).await, "disable");
    assert!(e.contains("no encryption") || e.contains("pg_hba") || e.contains("rejects"), "{e}");
    let other = certs.other_ca.display().to_string();
    let e = refused(
        open(url("localhost", &format!("sslmode=verify-full&sslrootcert={other}"))).await,
        "other CA",
    );
    assert!(e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"), "{e}");
    let e =
        refused(open(url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"))).await, "wrong name");
    assert!(e.to_lowercase().contains("certificate") || e.contains("NotValidForName"), "{e}");
    // verify-full without a CA file is refused before any connection, naming the setting.
    let e = refused(open(url("localhost", "sslmode=verify-full")).await, "no sslrootcert");
    assert!(e.contains("sslrootcert"), "{e}");
}

fn drove_engine_now() -> drove_core::Millis {
    drove_core::Millis::from_system_time(std::time::SystemTime::now())
}
