//! Test support (feature `testing`): a throwaway PostgreSQL cluster.

use std::process::Command;

/// A PostgreSQL cluster in a temporary directory on loopback, started as the
/// `postgres` system user (the server refuses to run as root), with a `tinker`
/// superuser and trust authentication; stopped and removed on drop.
#[derive(Debug)]
pub struct TempPostgres {
    dir: tempfile::TempDir,
    bin: String,
    /// `postgres://tinker@127.0.0.1:PORT/postgres`
    pub url: String,
}

impl TempPostgres {
    /// Starts one; `None` (with a note) when PostgreSQL is not installed, unless
    /// `TINKER_REQUIRE_REAL=1`, which makes that a panic.
    pub fn start() -> Option<TempPostgres> {
        Self::start_with(&[])
    }

    /// [`start`](Self::start), with server settings of the caller's
    /// (`name=value`, each passed as `-c name=value`), such as
    /// `shared_preload_libraries=pg_stat_statements` for a profile.
    pub fn start_with(settings: &[&str]) -> Option<TempPostgres> {
        // They go through a shell command line, unquoted.
        assert!(
            settings
                .iter()
                .all(|s| s.contains('=') && !s.contains(['\'', '"', ' ', '\\', '$', '`'])),
            "settings are name=value words: {settings:?}"
        );
        let find = "for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1) $(dirname $(command -v initdb 2>/dev/null) 2>/dev/null); do [ -x $d/initdb ] && echo $d && break; done";
        let bin = Command::new("sh")
            .args(["-c", find])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let has_user = Command::new("id")
            .arg("postgres")
            .output()
            .is_ok_and(|o| o.status.success());
        if bin.is_empty() || !has_user {
            assert!(
                !tinker_core::testing::require_real(),
                "PostgreSQL (initdb, pg_ctl, a postgres user) is required (TINKER_REQUIRE_REAL=1)"
            );
            eprintln!("skipped: no PostgreSQL");
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let d = dir.path().display();
        let extra: String = settings.iter().map(|s| format!(" -c {s}")).collect();
        let script = format!(
            "chown postgres {d} && su postgres -s /bin/sh -c \"{bin}/initdb -D {d}/data -A trust -U tinker >/dev/null && {bin}/pg_ctl -D {d}/data -o '-k {d} -c listen_addresses=127.0.0.1 -p {port} -c fsync=on -c max_connections=300{extra}' -l {d}/log -w start >/dev/null\""
        );
        let o = Command::new("sh")
            .args(["-c", &script])
            .output()
            .expect("sh");
        assert!(
            o.status.success(),
            "PostgreSQL did not start: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Some(TempPostgres {
            url: format!("postgres://tinker@127.0.0.1:{port}/postgres"),
            dir,
            bin,
        })
    }

    /// Restarts the server (a fast shutdown: every connection to it is
    /// closed), with the same settings and data.
    pub fn restart(&self) {
        let o = self.pg_ctl("-m fast -w restart").expect("sh");
        assert!(
            o.status.success(),
            "PostgreSQL did not restart: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Runs `pg_ctl` on the cluster, as the `postgres` user.
    fn pg_ctl(&self, args: &str) -> std::io::Result<std::process::Output> {
        let d = self.dir.path().display();
        Command::new("sh")
            .args([
                "-c",
                &format!(
                    "su postgres -s /bin/sh -c \"{}/pg_ctl -D {d}/data {args} >/dev/null\"",
                    self.bin
                ),
            ])
            .output()
    }

    /// The server's process id (to read its memory use, say).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl("-m immediate stop");
    }
}
