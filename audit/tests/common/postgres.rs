//! A throwaway PostgreSQL cluster on loopback for tests (shared by the audit crate's tests and
//! the end-to-end suite through `#[path]`). Run as the `postgres` user when we are root.
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

impl Postgres {
    pub(crate) fn start() -> Option<Postgres> {
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
        };
        let data = pg.data();
        let ok = pg
            .run(
                "initdb",
                &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            )
            .success();
        assert!(ok, "initdb failed");
        pg.ctl_start();
        Some(pg)
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
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.base.path().display()
        );
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
    /// Runs one SQL statement with `psql` and returns its unaligned, tuples-only output.
    pub(crate) fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-At", "-c", sql, &self.conninfo()])
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
