//! A throwaway PostgreSQL cluster on loopback for tests (shared by the audit crate's tests and
//! the end-to-end suite through `#[path]`), in clear or with `ssl=on` and a server certificate
//! from a test CA. Run as the `postgres` user when we are root.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

/// A throwaway PostgreSQL cluster in a temp dir, run as the `postgres` user when we are root.
pub(crate) struct Postgres {
    bin: PathBuf,
    base: tempfile::TempDir,
    port: u16,
    as_user: Option<String>,
    tls: bool,
}

/// A test certificate authority (rcgen): signs server and client leaves.
pub(crate) struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub(crate) cert_pem: String,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf with common name `cn` and these subject alternative names (IP addresses or DNS
    /// names): (certificate PEM, key PEM).
    pub(crate) fn leaf(&self, cn: &str, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// How a cluster started with [`Postgres::start_tls`] speaks TLS.
pub(crate) struct ServerTls {
    /// The server's certificate and key, PEM.
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    /// With a client CA, TCP clients must present a certificate from it whose common name is
    /// the user (`cert` authentication); without, TCP clients must use TLS (`hostssl`).
    pub(crate) client_ca_pem: Option<String>,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn find_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists() && p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Set (by `tests/run.sh` and CI) when PostgreSQL must be there: a test that needs it fails
/// instead of skipping.
pub(crate) const REQUIRE_POSTGRES: &str = "PORTCULLIS_REQUIRE_POSTGRES";

impl Postgres {
    /// A cluster ([`Postgres::start_tls`] with `tls`), or None (the caller skips) when PostgreSQL is not installed and
    /// [`REQUIRE_POSTGRES`] is unset; with it set, a missing PostgreSQL fails the test.
    pub(crate) fn start_or_skip(test: &str, tls: Option<ServerTls>) -> Option<Postgres> {
        let pg = Self::start_with(tls);
        if pg.is_none() {
            assert!(
                std::env::var_os(REQUIRE_POSTGRES).is_none(),
                "{test}: PostgreSQL is not installed and {REQUIRE_POSTGRES} is set"
            );
            eprintln!("SKIP {test}: PostgreSQL is not installed");
        }
        pg
    }

    /// A cluster that speaks in clear only (`ssl=off`).
    pub(crate) fn start() -> Option<Postgres> {
        Self::start_with(None)
    }

    /// A cluster with `ssl=on` that refuses clear-text TCP connections.
    pub(crate) fn start_tls(tls: ServerTls) -> Option<Postgres> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<ServerTls>) -> Option<Postgres> {
        let bin = find_bin().or_else(|| {
            if is_root() {
                eprintln!("PostgreSQL not found: apt-get install -y postgresql");
                let _ = Command::new("apt-get")
                    .args(["install", "-y", "-qq", "postgresql"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .status();
            }
            find_bin()
        })?;
        let base = tempfile::tempdir().ok()?;
        let as_user = is_root().then(|| "postgres".to_string());
        if as_user.is_some() {
            // PostgreSQL refuses to run as root: hand the directory to the postgres user.
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(base.path())
                .status()
                .ok()?;
            assert!(st.success(), "chown to postgres failed");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let pg = Postgres {
            bin,
            base,
            port,
            as_user,
            tls: tls.is_some(),
        };
        let data = pg.data();
        let ok = pg
            .run(
                "initdb",
                &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            )
            .success();
        assert!(ok, "initdb failed");
        if let Some(tls) = tls {
            pg.install_tls(&tls);
        }
        pg.ctl_start();
        Some(pg)
    }

    /// Writes the server's TLS files (key 0600, owned by the server's user) and a `pg_hba.conf`
    /// that accepts TCP only over TLS.
    fn install_tls(&self, tls: &ServerTls) {
        use std::os::unix::fs::PermissionsExt;
        let base = self.base.path();
        let mut files = vec![
            ("server.crt", tls.cert_pem.as_str()),
            ("server.key", tls.key_pem.as_str()),
        ];
        let auth = match &tls.client_ca_pem {
            Some(ca) => {
                files.push(("client-ca.crt", ca.as_str()));
                "cert"
            }
            None => "trust",
        };
        let hba = format!("local all all trust\nhostssl all all 127.0.0.1/32 {auth}\n");
        std::fs::write(base.join("data/pg_hba.conf"), hba).unwrap();
        for (name, pem) in files {
            let path = base.join(name);
            std::fs::write(&path, pem).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        if let Some(user) = &self.as_user {
            let st = Command::new("chown")
                .args(["-R", &format!("{user}:{user}")])
                .arg(base)
                .status()
                .unwrap();
            assert!(st.success(), "chown of the TLS files failed");
        }
    }

    fn data(&self) -> String {
        self.base.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> std::process::ExitStatus {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.as_user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run PostgreSQL tool")
    }

    pub(crate) fn ctl_start(&self) {
        let base = self.base.path().display();
        let mut opts = format!(
            "-p {} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
        );
        if self.tls {
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={base}/server.crt -c ssl_key_file={base}/server.key"
            ));
            if self.base.path().join("client-ca.crt").exists() {
                opts.push_str(&format!(" -c ssl_ca_file={base}/client-ca.crt"));
            }
        }
        let log = self.base.path().join("pg.log").display().to_string();
        let ok = self
            .run(
                "pg_ctl",
                &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
            )
            .success();
        assert!(ok, "pg_ctl start failed");
    }

    pub(crate) fn ctl_stop(&self, mode: &str) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", mode, "-w", "stop"]);
    }

    pub(crate) fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=2",
            self.port
        )
    }
}

impl Postgres {
    /// Runs one SQL statement with `psql` (over the Unix socket, so whatever TCP demands) and
    /// returns its unaligned, tuples-only output.
    pub(crate) fn psql(&self, sql: &str) -> String {
        let socket = format!(
            "host={} port={} user=postgres dbname=postgres",
            self.base.path().display(),
            self.port
        );
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-At", "-c", sql, &socket])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.ctl_stop("immediate");
    }
}
