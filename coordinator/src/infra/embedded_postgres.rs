//! An embedded PostgreSQL for when no database URL is given: a cluster in a directory the
//! coordinator owns, run from the installed server binaries.
//!
//! It listens only on a Unix socket inside that directory (mode 0700), so `trust`
//! authentication admits nobody but the directory's owner (and root). `initdb` refuses to run
//! as root, so as root the cluster runs as an unprivileged user (`postgres` by default).

use nix::unistd::{Gid, Uid, User};
use sqlx::postgres::PgConnectOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The database the coordinator uses inside the embedded cluster.
pub const DATABASE: &str = "ipw";
/// The cluster's superuser, made by `initdb`.
pub const USER: &str = "ipw";
/// Only names the socket file; nothing listens on TCP.
const PORT: u16 = 5432;

/// Why the embedded cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    /// No `initdb`/`pg_ctl` anywhere we looked.
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl) were found.\n\
         Either install them (Debian/Ubuntu: `apt-get install postgresql`; Fedora: \
         `dnf install postgresql-server`; macOS: `brew install postgresql@16`), or point \
         IPW_PG_BIN_DIR at the folder that holds them,\n\
         or use an existing database: --database-url postgres://user:pass@host/db \
         (or IPW_DATABASE_URL)."
    )]
    NoBinaries,
    /// Running as root and the unprivileged user is missing.
    #[error(
        "running as root, and initdb refuses root, so PostgreSQL must run as user `{0}`, which \
         does not exist; create it (`useradd --system postgres`) or set IPW_PG_USER"
    )]
    NoUnprivilegedUser(String),
    /// A command failed; carries its output.
    #[error("`{command}` failed: {output}")]
    Command {
        /// What was run.
        command: String,
        /// Its stderr/stdout or log tail.
        output: String,
    },
    /// Filesystem trouble in the data directory.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A running embedded cluster. Call [`EmbeddedPostgres::stop`] on the way out.
#[derive(Debug, Clone)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    root: PathBuf,
    run_as: Option<(Uid, Gid)>,
}

impl EmbeddedPostgres {
    /// Starts (creating on first use) the cluster under `data_dir/postgres`. A cluster left
    /// running by a coordinator that died is adopted.
    pub async fn start(data_dir: &Path) -> Result<Self, EmbeddedPgError> {
        let bin_dir = find_bin_dir().ok_or(EmbeddedPgError::NoBinaries)?;
        let root = data_dir.join("postgres");
        let run_as = if nix::unistd::geteuid().is_root() {
            let name = std::env::var("IPW_PG_USER").unwrap_or_else(|_| "postgres".into());
            let user = User::from_name(&name).ok().flatten().ok_or(EmbeddedPgError::NoUnprivilegedUser(name))?;
            Some((user.uid, user.gid))
        } else {
            None
        };
        let pg = Self { bin_dir, root, run_as };
        let starter = pg.clone();
        tokio::task::spawn_blocking(move || starter.start_blocking())
            .await
            .expect("embedded postgres start task panicked")?;
        pg.ensure_database().await?;
        Ok(pg)
    }

    fn pgdata(&self) -> PathBuf {
        self.root.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// Options that reach the coordinator's database over the socket.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options_for(DATABASE)
    }

    fn options_for(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new().socket(self.socket_dir()).port(PORT).username(USER).database(database)
    }

    /// A `psql` command line that reaches the embedded database, for people.
    pub fn psql_command(&self) -> String {
        format!("psql \"host={} port={PORT} user={USER} dbname={DATABASE}\"", self.socket_dir().display())
    }

    fn start_blocking(&self) -> Result<(), EmbeddedPgError> {
        let io = |context: String| move |source| EmbeddedPgError::Io { context, source };
        for dir in [&self.root, &self.socket_dir()] {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
            self.secure_dir(dir).map_err(io(format!("securing {} (a symbolic link is refused)", dir.display())))?;
        }
        let pgdata = self.pgdata();
        if !pgdata.join("PG_VERSION").exists() {
            self.run(self.pg_command("initdb").arg("-D").arg(&pgdata).args([
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ]))?;
            let conf = pgdata.join("postgresql.conf");
            let include = "\n# Written by ipw-coordinator: socket only, settings in ipw-fleet.conf.\ninclude_if_exists = 'ipw-fleet.conf'\n";
            self.write_as_owner(&conf, include, true).map_err(io(format!("writing {}", conf.display())))?;
        }
        // Rewritten at every start, so a moved data directory keeps working.
        let settings = format!(
            // jit: compiling a view's plan took longer than running it (stored summaries).
            "listen_addresses = ''\nport = {PORT}\nunix_socket_directories = '{}'\nunix_socket_permissions = 0700\n\
             jit = off\n",
            self.socket_dir().display().to_string().replace('\'', "''")
        );
        let settings_file = pgdata.join("ipw-fleet.conf");
        self.write_as_owner(&settings_file, &settings, false)
            .map_err(io(format!("writing {}", settings_file.display())))?;

        let running =
            self.pg_command("pg_ctl").arg("status").arg("-D").arg(&pgdata).output().is_ok_and(|o| o.status.success());
        if !running {
            let started = self.run(
                self.pg_command("pg_ctl")
                    .arg("start")
                    .arg("-D")
                    .arg(&pgdata)
                    .arg("-l")
                    .arg(self.log_file())
                    .args(["-w", "-t", "60"]),
            );
            if let Err(e) = started {
                let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                return Err(EmbeddedPgError::Command {
                    command: "pg_ctl start".into(),
                    output: format!("{e}\nlast log lines:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n")),
                });
            }
        }
        Ok(())
    }

    async fn ensure_database(&self) -> Result<(), EmbeddedPgError> {
        use sqlx::ConnectOptions;
        let db_err =
            |e: sqlx::Error| EmbeddedPgError::Command { command: "CREATE DATABASE ipw".into(), output: e.to_string() };
        let mut conn = self.options_for("postgres").connect().await.map_err(db_err)?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(DATABASE)
            .fetch_one(&mut conn)
            .await
            .map_err(db_err)?;
        if !exists {
            // DATABASE is a constant identifier, not input.
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DATABASE}")))
                .execute(&mut conn)
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }

    /// Stops the cluster (fast shutdown: open sessions are rolled back, data is flushed).
    pub async fn stop(self) -> Result<(), EmbeddedPgError> {
        tokio::task::spawn_blocking(move || {
            self.run(self.pg_command("pg_ctl").arg("stop").arg("-D").arg(self.pgdata()).args(["-m", "fast", "-w"]))
        })
        .await
        .expect("embedded postgres stop task panicked")
    }

    /// Makes `dir` mode 0700 and the postgres user's, through a descriptor opened without
    /// following a symbolic link: the postgres user owns the folder above, and must not be
    /// able to point root's chmod and chown at, say, `/etc`.
    fn secure_dir(&self, dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY)
            .open(dir)?;
        handle.set_permissions(std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::fchown(&handle, Some(uid.as_raw()), Some(gid.as_raw()))?;
        }
        Ok(())
    }

    /// Writes (or, with `append`, appends) a file in the data directory as the user that
    /// owns it: running as root, a symbolic link the postgres user planted there then grants
    /// nothing that user could not already write.
    fn write_as_owner(&self, path: &Path, text: &str, append: bool) -> std::io::Result<()> {
        use std::io::Write;
        let Some((uid, gid)) = self.run_as else {
            let mut f =
                std::fs::OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(path)?;
            return f.write_all(text.as_bytes());
        };
        let script = if append { r#"cat >> "$1""# } else { r#"cat > "$1""# };
        let mut child = Command::new("/bin/sh")
            .args(["-c", script, "sh"])
            .arg(path)
            .uid(uid.as_raw())
            .gid(gid.as_raw())
            .current_dir(&self.root)
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("piped").write_all(text.as_bytes())?;
        let status = child.wait()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("writing as the postgres user failed ({status})")));
        }
        Ok(())
    }

    fn pg_command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid.as_raw()).gid(gid.as_raw());
            // Postgres tools read $HOME and the cwd; root's are off limits to them.
            c.env("HOME", &self.root).current_dir(&self.root);
        }
        c
    }

    fn run(&self, command: &mut Command) -> Result<(), EmbeddedPgError> {
        let name = format!("{command:?}");
        let out =
            command.output().map_err(|source| EmbeddedPgError::Io { context: format!("running {name}"), source })?;
        if out.status.success() {
            return Ok(());
        }
        let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stdout));
        if self.run_as.is_some() {
            output.push_str(&format!(
                "\n(PostgreSQL runs as an unprivileged user: it must be able to reach {})",
                self.root.display()
            ));
        }
        Err(EmbeddedPgError::Command { command: name, output })
    }
}

/// Finds the folder holding `initdb` and `pg_ctl`: `IPW_PG_BIN_DIR`, then `PATH`, then the
/// usual Debian, Homebrew and source-install locations (newest version first).
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("IPW_PG_BIN_DIR") {
        return Some(PathBuf::from(d)).filter(|d| has_both(d));
    }
    let from_path = std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    for dir in from_path {
        let initdb = dir.join("initdb");
        if let Ok(real) = std::fs::canonicalize(&initdb)
            && let Some(parent) = real.parent().filter(|p| has_both(p))
        {
            return Some(parent.to_path_buf());
        }
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    for pattern_root in ["/usr/lib/postgresql", "/opt/homebrew/opt", "/usr/local/opt"] {
        if let Ok(entries) = std::fs::read_dir(pattern_root) {
            candidates.extend(entries.flatten().map(|e| e.path().join("bin")));
        }
    }
    candidates.sort_by(|a, b| b.cmp(a));
    candidates.push(PathBuf::from("/usr/local/pgsql/bin"));
    candidates.into_iter().find(|d| has_both(d))
}
