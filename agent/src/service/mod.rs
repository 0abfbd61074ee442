//! `ipw-agent service`: writes the systemd unit (Linux) or the launchd plist (macOS) that keeps
//! `ipw-agent run` running on this machine, from this machine's paths and user, and removes it.
//! The plan (what runs, which file, where) is resolved here; `systemd` and `launchd` render it.

pub mod launchd;
pub mod systemd;

use anyhow::{Context, bail};
use std::borrow::Cow;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// launchd's label, the same for both scopes: a machine runs one or the other.
pub const LABEL: &str = "com.ipw-fleet.agent";
/// systemd's unit name.
pub const UNIT: &str = "ipw-agent.service";

/// The service manager's file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A systemd unit (Linux).
    Systemd,
    /// A launchd property list (macOS).
    Launchd,
}

impl Format {
    /// launchd on macOS, systemd elsewhere.
    pub fn native() -> Self {
        if cfg!(target_os = "macos") { Self::Launchd } else { Self::Systemd }
    }
}

/// Which service manager runs the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// The system's: starts at boot with no one logged in (needs root to install).
    System,
    /// The installing user's: runs as that user, while the user's session manager runs.
    User,
}

/// `ipw-agent service`'s actions.
#[derive(clap::Subcommand, Debug)]
pub enum ServiceAction {
    /// Writes the systemd unit or launchd plist for this machine, creates the spool (and log)
    /// directory, and prints what it did and the command that starts the service.
    Install(InstallArgs),
    /// Removes the file `install` writes; the config (the agent's identity) and the spool stay.
    Uninstall(UninstallArgs),
    /// Prints the file `install` would write, and writes nothing.
    Print(ServiceArgs),
}

/// Which file: its format and scope.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// systemd or launchd (default: launchd on macOS, systemd elsewhere).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// system (at boot, needs root) or user (as you). Default: system as root, else user.
    #[arg(long, value_enum)]
    pub scope: Option<Scope>,
}

/// What the service runs with. The config is the global --config (or IPW_AGENT_CONFIG).
#[derive(clap::Args, Debug, Clone)]
pub struct ServiceArgs {
    /// The file's format and scope.
    #[command(flatten)]
    pub target: Target,
    /// The user a system service runs as (default: the user installing it, so root under sudo).
    /// It must be able to read the config, which `join` writes with mode 0600.
    #[arg(long)]
    pub user: Option<String>,
    /// The service's spool (default: `run`'s default for the user installing it).
    #[arg(long, env = "IPW_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// The OpenAI-compatible engine the service uses.
    #[arg(long, env = "IPW_ENGINE_URL", default_value = "http://127.0.0.1:8080")]
    pub engine_url: String,
    /// Have the service serve /metrics, /healthz and /readyz on this address.
    #[arg(long, env = "IPW_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The ipw-agent binary the service runs (default: this one). An absolute path.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// More arguments for `ipw-agent run`, after `--`, e.g. `-- --engine managed --model-dir /m`.
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

/// `ipw-agent service install`'s settings.
#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// What the service runs with.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Write the file here instead, and do nothing else: no directories, nothing started
    /// (for packaging and tests).
    #[arg(long, conflicts_with = "start")]
    pub output: Option<PathBuf>,
    /// Replace an existing file that differs from the one to write.
    #[arg(long)]
    pub force: bool,
    /// Print the file to stdout and what install would do to stderr; change nothing.
    #[arg(long, conflicts_with = "start")]
    pub dry_run: bool,
    /// Also load and start the service (systemctl or launchctl), and report their exit status.
    #[arg(long)]
    pub start: bool,
}

/// `ipw-agent service uninstall`'s settings.
#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    /// The file's format and scope.
    #[command(flatten)]
    pub target: Target,
    /// Remove this file instead of the installed one.
    #[arg(long, conflicts_with = "stop")]
    pub output: Option<PathBuf>,
    /// Stop and unload the service first (systemctl disable --now, launchctl bootout).
    #[arg(long)]
    pub stop: bool,
}

/// What the service runs, as both formats render it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// System or user service.
    pub scope: Scope,
    /// The absolute path of the ipw-agent binary.
    pub binary: PathBuf,
    /// Arguments after `run`.
    pub run_args: Vec<String>,
    /// The user a system service runs as; `None` for a user service.
    pub user: Option<String>,
    /// The agent's config (IPW_AGENT_CONFIG), absolute.
    pub config: PathBuf,
    /// The spool (IPW_SPOOL_DIR), absolute.
    pub spool_dir: PathBuf,
    /// IPW_ENGINE_URL.
    pub engine_url: String,
    /// IPW_METRICS_LISTEN, when set.
    pub metrics_listen: Option<SocketAddr>,
    /// Where launchd writes the agent's stdout and stderr (systemd has the journal).
    pub log_dir: Option<PathBuf>,
}

impl Service {
    /// The command line the service runs: the binary, `run`, then the extra arguments.
    pub fn argv(&self) -> anyhow::Result<Vec<String>> {
        let mut argv = vec![utf8(&self.binary)?.to_owned(), "run".to_owned()];
        argv.extend(self.run_args.iter().cloned());
        Ok(argv)
    }

    /// The variables `ipw-agent run` reads, in a fixed order. Settings go in the environment
    /// rather than on the command line so that a drop-in or an edited plist can change one.
    pub fn environment(&self) -> anyhow::Result<Vec<(&'static str, String)>> {
        let mut env = vec![
            ("IPW_AGENT_CONFIG", utf8(&self.config)?.to_owned()),
            ("IPW_SPOOL_DIR", utf8(&self.spool_dir)?.to_owned()),
            ("IPW_ENGINE_URL", self.engine_url.clone()),
        ];
        if let Some(addr) = self.metrics_listen {
            env.push(("IPW_METRICS_LISTEN", addr.to_string()));
        }
        Ok(env)
    }
}

/// A service file to write: the format, where it goes, and what it runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// systemd or launchd.
    pub format: Format,
    /// Where the file goes.
    pub path: PathBuf,
    /// What it runs.
    pub service: Service,
}

impl Plan {
    /// The file's text.
    pub fn render(&self) -> anyhow::Result<String> {
        match self.format {
            Format::Systemd => systemd::render(&self.service),
            Format::Launchd => launchd::render(&self.service),
        }
    }

    /// The directories the service needs before it starts, with their modes: the spool
    /// (results not yet acknowledged, owner only) and launchd's log directory.
    pub fn dirs(&self) -> Vec<(PathBuf, u32)> {
        let mut dirs = vec![(self.service.spool_dir.clone(), 0o700)];
        dirs.extend(self.service.log_dir.iter().map(|d| (d.clone(), 0o755)));
        dirs
    }

    /// Where the agent's log goes.
    fn logs(&self) -> String {
        match (self.format, &self.service.log_dir) {
            (Format::Launchd, Some(dir)) => {
                format!("tail -f {}", shell_word(&dir.join("agent.err.log").to_string_lossy()))
            }
            _ if self.service.scope == Scope::User => "journalctl --user -u ipw-agent -f".into(),
            _ => "journalctl -u ipw-agent -f".into(),
        }
    }
}

/// One command `--start` or `--stop` runs; `may_fail` for an unload of what may not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Step {
    argv: Vec<String>,
    may_fail: bool,
}

fn step(argv: &[&str], may_fail: bool) -> Step {
    Step { argv: argv.iter().map(|a| (*a).to_owned()).collect(), may_fail }
}

/// launchd's domain: the system's, or the invoking user's GUI session.
fn launchd_domain(scope: Scope) -> String {
    match scope {
        Scope::System => "system".into(),
        Scope::User => format!("gui/{}", nix::unistd::getuid()),
    }
}

/// What was at the file's place before `install`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Before {
    /// No file.
    Absent,
    /// The same file.
    Same,
    /// Another file, replaced.
    Different,
}

/// The commands that load and start the service from `path`. A replaced file needs a restart
/// (systemd), or the old settings keep running; launchd refuses to load a job twice, so one
/// that may be loaded is unloaded first.
fn start_steps(format: Format, scope: Scope, path: &Path, before: Before) -> Vec<Step> {
    let path = path.to_string_lossy();
    match format {
        Format::Systemd => {
            let ctl: &[&str] = if scope == Scope::User { &["systemctl", "--user"] } else { &["systemctl"] };
            let mut verbs = vec![&["daemon-reload"][..], &["enable", "--now", "ipw-agent"]];
            if before == Before::Different {
                verbs.push(&["restart", "ipw-agent"]);
            }
            verbs.into_iter().map(|verb| step(&[ctl, verb].concat(), false)).collect()
        }
        Format::Launchd => {
            let domain = launchd_domain(scope);
            let mut steps = Vec::new();
            if before != Before::Absent {
                steps.push(step(&["launchctl", "bootout", &format!("{domain}/{LABEL}")], true));
            }
            steps.push(step(&["launchctl", "bootstrap", &domain, &path], false));
            steps
        }
    }
}

/// The commands that stop the service and unload it, before its file is removed.
fn stop_steps(format: Format, scope: Scope) -> Vec<Step> {
    match (format, scope) {
        (Format::Systemd, Scope::System) => vec![step(&["systemctl", "disable", "--now", "ipw-agent"], false)],
        (Format::Systemd, Scope::User) => vec![step(&["systemctl", "--user", "disable", "--now", "ipw-agent"], false)],
        // bootout fails when the job is not loaded, which is what uninstall wants anyway.
        (Format::Launchd, _) => {
            vec![step(&["launchctl", "bootout", &format!("{}/{LABEL}", launchd_domain(scope))], true)]
        }
    }
}

/// After the file is removed, systemd must forget the unit; launchd forgot it at bootout.
fn forget_steps(format: Format, scope: Scope) -> Vec<Step> {
    match (format, scope) {
        (Format::Systemd, Scope::System) => vec![step(&["systemctl", "daemon-reload"], false)],
        (Format::Systemd, Scope::User) => vec![step(&["systemctl", "--user", "daemon-reload"], false)],
        (Format::Launchd, _) => Vec::new(),
    }
}

/// `steps` as one shell line.
fn shell_line(steps: &[Step]) -> String {
    let line = |s: &Step| s.argv.iter().map(|a| shell_word(a)).collect::<Vec<_>>().join(" ");
    steps.iter().map(line).collect::<Vec<_>>().join(" && ")
}

/// `word` quoted for a POSIX shell when it needs to be.
fn shell_word(word: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-=:@+,%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

/// A path as UTF-8: both file formats are text, and a mangled path would name another file.
pub(crate) fn utf8(path: &Path) -> anyhow::Result<&str> {
    path.to_str().with_context(|| format!("{} is not UTF-8", path.display()))
}

fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set: a user service's files go under it")
}

/// Where the service manager looks for the file.
pub fn default_path(format: Format, scope: Scope) -> anyhow::Result<PathBuf> {
    Ok(match (format, scope) {
        (Format::Systemd, Scope::System) => Path::new("/etc/systemd/system").join(UNIT),
        (Format::Systemd, Scope::User) => {
            let config = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()).map(PathBuf::from);
            config.map_or_else(|| home().map(|h| h.join(".config")), Ok)?.join("systemd/user").join(UNIT)
        }
        (Format::Launchd, Scope::System) => Path::new("/Library/LaunchDaemons").join(format!("{LABEL}.plist")),
        (Format::Launchd, Scope::User) => home()?.join("Library/LaunchAgents").join(format!("{LABEL}.plist")),
    })
}

/// launchd's log directory, as deploy/launchd/ has it.
fn launchd_log_dir(scope: Scope) -> anyhow::Result<PathBuf> {
    match scope {
        Scope::System => Ok(PathBuf::from("/usr/local/var/log/ipw-agent")),
        Scope::User => Ok(home()?.join("Library/Logs/ipw-agent")),
    }
}

fn default_scope() -> Scope {
    if nix::unistd::geteuid().is_root() { Scope::System } else { Scope::User }
}

/// The user a system service runs as: --user, else whoever installs it (root under sudo). A
/// user service always runs as its user, so --user is refused there.
fn service_user(scope: Scope, given: Option<&str>) -> anyhow::Result<Option<String>> {
    match (scope, given) {
        (Scope::User, Some(_)) => {
            bail!("--user is for --scope system: a user service runs as the user who installs it")
        }
        (Scope::User, None) => Ok(None),
        (Scope::System, Some(u)) if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            bail!("--user {u:?} is not a user name")
        }
        (Scope::System, Some(u)) => Ok(Some(u.to_owned())),
        (Scope::System, None) => {
            let uid = nix::unistd::geteuid();
            let user = nix::unistd::User::from_uid(uid).ok().flatten();
            Ok(Some(user.with_context(|| format!("uid {uid} has no user name: give --user"))?.name))
        }
    }
}

/// Resolves the arguments on this machine: the binary, absolute paths, the user, the file's
/// place (`output`, else where the service manager looks).
pub fn plan(args: &ServiceArgs, config: &Path, output: Option<&Path>) -> anyhow::Result<Plan> {
    let format = args.target.format.unwrap_or_else(Format::native);
    let scope = args.target.scope.unwrap_or_else(default_scope);
    let binary = match &args.binary {
        Some(b) if b.is_absolute() => b.clone(),
        Some(b) => bail!("--binary {} is not an absolute path", b.display()),
        // The real file, not a symlink a package manager may repoint or remove.
        None => std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .context("cannot find this ipw-agent binary's path: give --binary")?,
    };
    // These set the service's environment; after -- they would override it unseen.
    let own = ["--config", "--spool-dir", "--engine-url", "--metrics-listen"];
    if let Some(a) = args.run_args.iter().find(|a| own.iter().any(|f| a.split('=').next() == Some(f))) {
        bail!("give {a} before --, to `service` itself: it sets the service's environment from it");
    }
    let spool = args.spool_dir.clone().unwrap_or_else(crate::config::default_spool_dir);
    let service = Service {
        scope,
        binary,
        run_args: args.run_args.clone(),
        user: service_user(scope, args.user.as_deref())?,
        config: std::path::absolute(config).with_context(|| format!("resolving {}", config.display()))?,
        spool_dir: std::path::absolute(&spool).with_context(|| format!("resolving {}", spool.display()))?,
        engine_url: args.engine_url.clone(),
        metrics_listen: args.metrics_listen,
        log_dir: if format == Format::Launchd { Some(launchd_log_dir(scope)?) } else { None },
    };
    let path = match output {
        Some(p) => p.to_owned(),
        None => default_path(format, scope)?,
    };
    Ok(Plan { format, path, service })
}

/// How `install` goes about it.
#[derive(Clone, Copy, Debug, Default)]
pub struct InstallOptions {
    /// The file goes to --output: write it and nothing else.
    pub output_only: bool,
    /// Replace a file that differs.
    pub force: bool,
    /// Run the start commands.
    pub start: bool,
}

/// Writes the plan's file, creates the service's directories, and starts it if asked, saying
/// on `out` what it did and what to run next.
pub fn install(plan: &Plan, opts: InstallOptions, out: &mut dyn Write) -> anyhow::Result<()> {
    let s = &plan.service;
    if !s.config.is_file() {
        bail!("{} does not exist: join first: {}", s.config.display(), join_hint(&s.config));
    }
    let user = check_user(plan, opts.output_only, out)?;
    let text = plan.render()?;
    let before = match std::fs::read(&plan.path) {
        Ok(old) if old == text.as_bytes() => {
            writeln!(out, "{} is already up to date", plan.path.display())?;
            Before::Same
        }
        Ok(_) if !opts.force => bail!(
            "{} exists and differs from the file this would write (`ipw-agent service print` shows it); \
             it was not overwritten: give --force to replace it",
            plan.path.display()
        ),
        Ok(_) => {
            write_atomic(&plan.path, &text)?;
            writeln!(out, "replaced {} (mode 0644; it differed, --force)", plan.path.display())?;
            Before::Different
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_atomic(&plan.path, &text)?;
            writeln!(out, "wrote {} (mode 0644)", plan.path.display())?;
            Before::Absent
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", plan.path.display())),
    };
    summary(plan, out)?;
    if opts.output_only {
        let dirs: Vec<_> = plan.dirs().iter().map(|(d, _)| d.display().to_string()).collect();
        writeln!(out, "not created (--output writes the file only): {}", dirs.join(", "))?;
        return Ok(());
    }
    for (dir, mode) in plan.dirs() {
        make_dir(&dir, mode, user.as_ref(), out)?;
    }
    let steps = start_steps(plan.format, s.scope, &plan.path, before);
    if opts.start {
        let path = plan.path.display();
        run_steps(&steps, out).with_context(|| format!("{path} is written, but the service did not start"))?;
    } else {
        writeln!(out, "next: {}", shell_line(&steps))?;
    }
    if plan.format == Format::Systemd && s.scope == Scope::User {
        writeln!(out, "to keep it running when you are logged out: loginctl enable-linger")?;
    }
    Ok(())
}

/// The `join` command for this config, as `ipw token create` prints it.
fn join_hint(config: &Path) -> String {
    format!(
        "ipw-agent --config {} join https://COORDINATOR:7443 --token-file TOKEN_FILE --ca-cert-hash sha256:... \
         (`ipw token create` prints the command), then install again",
        shell_word(&config.to_string_lossy())
    )
}

/// Looks the system service's user up. Unknown: an error when installing here, a warning for
/// --output (the file may be for another machine). Warns when that user cannot read the config.
fn check_user(plan: &Plan, output_only: bool, out: &mut dyn Write) -> anyhow::Result<Option<nix::unistd::User>> {
    let Some(name) = &plan.service.user else { return Ok(None) };
    let user = nix::unistd::User::from_name(name).with_context(|| format!("looking up user {name}"))?;
    let Some(user) = user else {
        if output_only {
            writeln!(out, "warning: there is no user {name} on this machine")?;
            return Ok(None);
        }
        bail!("there is no user {name} on this machine: create it, or give another --user");
    };
    let owner = std::fs::metadata(&plan.service.config)?.uid();
    if !user.uid.is_root() && owner != user.uid.as_raw() {
        writeln!(
            out,
            "warning: {config} belongs to uid {owner} (mode 0600 after join): {name} cannot read it; \
             run `chown {name} {config}`",
            config = shell_word(&plan.service.config.to_string_lossy()),
        )?;
    }
    Ok(Some(user))
}

/// What the written file makes the service do.
fn summary(plan: &Plan, out: &mut dyn Write) -> anyhow::Result<()> {
    let s = &plan.service;
    let argv = s.argv()?.iter().map(|a| shell_word(a).into_owned()).collect::<Vec<_>>().join(" ");
    writeln!(out, "  runs:    {argv}")?;
    writeln!(out, "  as:      {}", s.user.as_deref().unwrap_or("you (a user service)"))?;
    writeln!(out, "  config:  {}", s.config.display())?;
    writeln!(out, "  spool:   {}", s.spool_dir.display())?;
    writeln!(out, "  engine:  {}", s.engine_url)?;
    if let Some(addr) = s.metrics_listen {
        writeln!(out, "  metrics: http://{addr}/metrics")?;
    }
    writeln!(out, "  logs:    {}", plan.logs())?;
    Ok(())
}

/// What `install` would do, changing nothing.
fn dry_run(plan: &Plan, output_only: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "dry run, nothing changed; install would write {} (mode 0644):", plan.path.display())?;
    summary(plan, out)?;
    if !plan.service.config.is_file() {
        writeln!(out, "but it refuses while {} does not exist: join first", plan.service.config.display())?;
    }
    if !output_only {
        let dirs: Vec<_> = plan.dirs().iter().map(|(d, _)| d.display().to_string()).collect();
        writeln!(out, "and create, if missing: {}", dirs.join(", "))?;
        writeln!(
            out,
            "next: {}",
            shell_line(&start_steps(plan.format, plan.service.scope, &plan.path, Before::Absent))
        )?;
    }
    Ok(())
}

/// Writes `text` to `path`, mode 0644, through a temporary file renamed over it, so that the
/// service manager never reads half a file. The temporary name ends in neither .service nor
/// .plist, which both managers ignore.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let write = || -> std::io::Result<()> {
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
        // The umask may have taken bits away; the service manager must be able to read it.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("writing {}: {e}", path.display())
    })
}

/// Creates `dir` with `mode`; the directories it creates belong to the service's `user` (when
/// that is not us), since the agent writes there. Warns about an existing one it cannot write.
fn make_dir(dir: &Path, mode: u32, user: Option<&nix::unistd::User>, out: &mut dyn Write) -> anyhow::Result<()> {
    let me = nix::unistd::geteuid();
    let owner = user.filter(|u| u.uid != me);
    if dir.is_dir() {
        let uid = std::fs::metadata(dir)?.uid();
        match owner {
            Some(u) if !u.uid.is_root() && uid != u.uid.as_raw() => writeln!(
                out,
                "warning: {} exists and belongs to uid {uid}: {} may not write there",
                dir.display(),
                u.name
            )?,
            _ => writeln!(out, "{} exists", dir.display())?,
        }
        return Ok(());
    }
    let missing: Vec<PathBuf> = dir.ancestors().take_while(|a| !a.exists()).map(Path::to_path_buf).collect();
    std::fs::DirBuilder::new().recursive(true).mode(mode).create(dir).with_context(|| {
        format!("creating {} (a system service is installed as root: sudo ipw-agent service install)", dir.display())
    })?;
    if let Some(u) = owner {
        for d in &missing {
            nix::unistd::chown(d, Some(u.uid), Some(u.gid))
                .with_context(|| format!("chown {} {}", u.name, d.display()))?;
        }
        writeln!(out, "created {} (mode {mode:o}, owner {})", dir.display(), u.name)?;
    } else {
        writeln!(out, "created {} (mode {mode:o})", dir.display())?;
    }
    Ok(())
}

/// Runs `steps` in order, reporting each exit status; stops at the first that fails unless it
/// may fail.
fn run_steps(steps: &[Step], out: &mut dyn Write) -> anyhow::Result<()> {
    for s in steps {
        let line = shell_line(std::slice::from_ref(s));
        let status = std::process::Command::new(&s.argv[0])
            .args(&s.argv[1..])
            .status()
            .with_context(|| format!("cannot run `{line}`"))?;
        let code = status.code().map_or_else(|| status.to_string(), |c| format!("exit {c}"));
        writeln!(out, "ran `{line}`: {code}")?;
        if !status.success() && !s.may_fail {
            bail!("`{line}` failed ({code})");
        }
    }
    Ok(())
}

/// Removes the service's file, saying what it removed and how to stop the service (or, with
/// `stop`, stopping it first).
pub fn uninstall(format: Format, scope: Scope, path: &Path, stop: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let stop_line = shell_line(&[stop_steps(format, scope), forget_steps(format, scope)].concat());
    if !path.exists() {
        writeln!(out, "nothing to remove: {} does not exist", path.display())?;
        writeln!(out, "if the service still runs, stop it: {stop_line}")?;
        return Ok(());
    }
    if stop {
        // Stopped first: without its file, systemd can no longer disable the unit.
        run_steps(&stop_steps(format, scope), out)
            .with_context(|| format!("the service did not stop; {} was not removed", path.display()))?;
    }
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    writeln!(out, "removed {}", path.display())?;
    if stop {
        run_steps(&forget_steps(format, scope), out)?;
    } else {
        writeln!(out, "if the service still runs, stop it: {stop_line} (--stop does it first)")?;
    }
    writeln!(out, "kept: the agent's config (its identity) and its spool (results not yet uploaded)")?;
    Ok(())
}

/// `ipw-agent service ACTION`. `config` is the config path in use; `check_run_args` checks the
/// arguments after `--` as `ipw-agent run` parses them, so that a typo fails here rather than
/// in a service that restarts every 5 seconds.
pub fn main(
    action: ServiceAction,
    config: &Path,
    check_run_args: impl Fn(&[String]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let stdout = &mut std::io::stdout().lock();
    match action {
        ServiceAction::Print(args) => {
            check_run_args(&args.run_args)?;
            let plan = plan(&args, config, None)?;
            if !plan.service.config.is_file() {
                eprintln!("note: {} does not exist yet: join first", plan.service.config.display());
            }
            write!(stdout, "{}", plan.render()?)?;
        }
        ServiceAction::Install(a) => {
            check_run_args(&a.service.run_args)?;
            let plan = plan(&a.service, config, a.output.as_deref())?;
            if a.dry_run {
                write!(stdout, "{}", plan.render()?)?;
                return dry_run(&plan, a.output.is_some(), &mut std::io::stderr().lock());
            }
            let opts = InstallOptions { output_only: a.output.is_some(), force: a.force, start: a.start };
            install(&plan, opts, stdout)?;
        }
        ServiceAction::Uninstall(a) => {
            let format = a.target.format.unwrap_or_else(Format::native);
            let scope = a.target.scope.unwrap_or_else(default_scope);
            let path = a.output.map_or_else(|| default_path(format, scope), Ok)?;
            uninstall(format, scope, &path, a.stop, stdout)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        action: ServiceAction,
    }

    fn install_args(extra: &[&str]) -> InstallArgs {
        let base = ["x", "install", "--binary", "/usr/local/bin/ipw-agent", "--engine-url", "http://127.0.0.1:8080"];
        match Cli::try_parse_from(base.iter().chain(extra)).unwrap().action {
            ServiceAction::Install(a) => a,
            other => panic!("{other:?}"),
        }
    }

    /// Installs with `--output` as the CLI does, returning what it printed.
    fn install_to(config: &Path, extra: &[&str]) -> anyhow::Result<String> {
        let a = install_args(extra);
        let plan = plan(&a.service, config, a.output.as_deref())?;
        let mut out = Vec::new();
        let opts = InstallOptions { output_only: a.output.is_some(), force: a.force, start: a.start };
        install(&plan, opts, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn install_with_output_writes_the_file_and_replaces_a_different_one_only_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.json");
        std::fs::write(&config, "{}").unwrap();
        let unit = dir.path().join("out/ipw-agent.service");
        let spool = dir.path().join("spool");
        let (unit_s, spool_s) = (unit.to_str().unwrap(), spool.to_str().unwrap());
        let args = ["--format", "systemd", "--scope", "user", "--spool-dir", spool_s, "--output", unit_s];
        let said = install_to(&config, &args).unwrap();
        assert!(said.contains(&format!("wrote {unit_s} (mode 0644)")), "{said}");
        assert!(said.contains("not created (--output"), "{said}");
        assert!(!spool.exists(), "--output writes the file only");
        let text = std::fs::read_to_string(&unit).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/ipw-agent run\n"), "{text}");
        assert!(text.contains(&format!("Environment=\"IPW_AGENT_CONFIG={}\"", config.display())), "{text}");
        assert_eq!(std::fs::metadata(&unit).unwrap().permissions().mode() & 0o777, 0o644);
        // The same file again: nothing to do.
        assert!(install_to(&config, &args).unwrap().contains("already up to date"));
        // A different one is refused, and the file is left alone.
        let changed = [&args[..], &["--metrics-listen", "127.0.0.1:9465"]].concat();
        let e = install_to(&config, &changed).unwrap_err().to_string();
        assert!(e.contains("differs") && e.contains("--force"), "{e}");
        assert_eq!(std::fs::read_to_string(&unit).unwrap(), text);
        let said = install_to(&config, &[&changed[..], &["--force"]].concat()).unwrap();
        assert!(said.contains("replaced"), "{said}");
        assert!(std::fs::read_to_string(&unit).unwrap().contains("IPW_METRICS_LISTEN=127.0.0.1:9465"));
        assert_eq!(std::fs::read_dir(unit.parent().unwrap()).unwrap().count(), 1, "no temporary file is left");
    }

    #[test]
    fn install_refuses_without_a_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("ipw-agent.service");
        let e = install_to(&dir.path().join("agent.json"), &["--scope", "user", "--output", unit.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("join first") && e.contains("ipw-agent --config"), "{e}");
        assert!(!unit.exists());
    }

    #[test]
    fn install_creates_the_spool_and_prints_the_next_command() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.json");
        std::fs::write(&config, "{}").unwrap();
        let args = install_args(&["--format", "launchd", "--scope", "user"]);
        let mut plan = plan(&args.service, &config, Some(&dir.path().join("agent.plist"))).unwrap();
        plan.service.spool_dir = dir.path().join("state/ipw-agent/spool");
        plan.service.log_dir = Some(dir.path().join("logs"));
        let mut out = Vec::new();
        install(&plan, InstallOptions::default(), &mut out).unwrap();
        let said = String::from_utf8(out).unwrap();
        let spool = std::fs::metadata(&plan.service.spool_dir).unwrap();
        assert_eq!(spool.permissions().mode() & 0o777, 0o700);
        assert!(dir.path().join("logs").is_dir());
        assert!(said.contains(&format!("created {} (mode 700)", plan.service.spool_dir.display())), "{said}");
        let uid = nix::unistd::getuid();
        assert!(said.contains(&format!("next: launchctl bootstrap gui/{uid} {}", plan.path.display())), "{said}");
    }

    #[test]
    fn directories_made_as_root_for_another_user_belong_to_it() {
        let (Some(nobody), true) = (nix::unistd::User::from_name("nobody").unwrap(), nix::unistd::geteuid().is_root())
        else {
            return; // Only root can give a directory away.
        };
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("lib/ipw-agent/spool");
        let mut out = Vec::new();
        make_dir(&spool, 0o700, Some(&nobody), &mut out).unwrap();
        for d in [dir.path().join("lib"), dir.path().join("lib/ipw-agent"), spool.clone()] {
            assert_eq!(std::fs::metadata(&d).unwrap().uid(), nobody.uid.as_raw(), "{}", d.display());
        }
        assert!(String::from_utf8(out).unwrap().contains("owner nobody"));
    }

    #[test]
    fn start_and_stop_commands() {
        let unit = Path::new("/etc/systemd/system/ipw-agent.service");
        assert_eq!(
            shell_line(&start_steps(Format::Systemd, Scope::System, unit, Before::Same)),
            "systemctl daemon-reload && systemctl enable --now ipw-agent"
        );
        assert_eq!(
            shell_line(&start_steps(Format::Systemd, Scope::User, unit, Before::Different)),
            "systemctl --user daemon-reload && systemctl --user enable --now ipw-agent && systemctl --user restart ipw-agent"
        );
        let daemon = Path::new("/Library/LaunchDaemons/com.ipw-fleet.agent.plist");
        assert_eq!(
            shell_line(&start_steps(Format::Launchd, Scope::System, daemon, Before::Same)),
            "launchctl bootout system/com.ipw-fleet.agent && \
             launchctl bootstrap system /Library/LaunchDaemons/com.ipw-fleet.agent.plist"
        );
        assert_eq!(shell_line(&stop_steps(Format::Systemd, Scope::System)), "systemctl disable --now ipw-agent");
        assert_eq!(shell_word("/Users/a b/it's"), r"'/Users/a b/it'\''s'");
    }

    #[test]
    fn uninstall_removes_the_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("ipw-agent.service");
        std::fs::write(&unit, "x").unwrap();
        let mut out = Vec::new();
        uninstall(Format::Systemd, Scope::System, &unit, false, &mut out).unwrap();
        uninstall(Format::Systemd, Scope::System, &unit, false, &mut out).unwrap();
        let said = String::from_utf8(out).unwrap();
        assert!(said.contains(&format!("removed {}", unit.display())), "{said}");
        assert!(said.contains("stop it: systemctl disable --now ipw-agent && systemctl daemon-reload"), "{said}");
        assert!(said.contains("nothing to remove"), "{said}");
        assert!(!unit.exists());
    }

    #[test]
    fn a_user_service_takes_no_user_and_a_system_service_defaults_to_the_installer() {
        let e = service_user(Scope::User, Some("ipw")).unwrap_err().to_string();
        assert!(e.contains("--scope system"), "{e}");
        assert_eq!(service_user(Scope::System, Some("ipw")).unwrap().as_deref(), Some("ipw"));
        assert!(service_user(Scope::System, Some("a b")).is_err());
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid()).unwrap().unwrap().name;
        assert_eq!(service_user(Scope::System, None).unwrap(), Some(me));
    }

    #[test]
    fn relative_paths_are_made_absolute_and_the_binary_must_be() {
        let mut args = install_args(&["--scope", "user", "--spool-dir", "rel/spool"]).service;
        let p = plan(&args, Path::new("agent.json"), Some(Path::new("/tmp/x"))).unwrap();
        assert!(p.service.config.is_absolute() && p.service.spool_dir.is_absolute(), "{p:?}");
        args.run_args = vec!["--engine-url=http://elsewhere".into()];
        let e = plan(&args, Path::new("agent.json"), Some(Path::new("/tmp/x"))).unwrap_err().to_string();
        assert!(e.contains("before --"), "{e}");
        args.run_args.clear();
        args.binary = Some("ipw-agent".into());
        assert!(plan(&args, Path::new("agent.json"), Some(Path::new("/tmp/x"))).is_err());
    }
}
