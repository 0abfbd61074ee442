//! Managed engine mode: the agent runs llama.cpp's `llama-server` itself, for whichever model
//! a lease asks for, from a directory of GGUF files. The server is started on demand, waited
//! on until healthy, and stopped when the agent moves to another model (or exits).

use crate::engine::names_for;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long a server may take to load its model.
const STARTUP: Duration = Duration::from_secs(180);

/// Where the models and the server binary are.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedOptions {
    /// A directory of `.gguf` files; each file is a model, named as its file (see `names_for`).
    pub model_dir: PathBuf,
    /// The `llama-server` binary.
    pub server: PathBuf,
    /// The port the server listens on, on 127.0.0.1.
    pub port: u16,
    /// CPU threads for the server (`-t`).
    pub threads: usize,
    /// Parallel slots (`-np`); at least the runs' concurrency.
    pub parallel: usize,
    /// More arguments for the server, e.g. `-ngl 99` to offload to a GPU.
    pub extra_args: Vec<String>,
    /// The GPUs it may use (`--gpus`), given to it as `CUDA_VISIBLE_DEVICES`, so the GPUs
    /// it runs on are the ones measured.
    pub gpus: Option<String>,
}

/// The server the agent runs, and the model it serves.
pub struct ManagedEngine {
    options: ManagedOptions,
    current: Option<(PathBuf, Child)>,
}

impl ManagedEngine {
    /// Manages servers as `options` says; nothing starts until a model is asked for.
    pub fn new(options: ManagedOptions) -> Result<Self, String> {
        if !options.server.is_file() {
            return Err(format!("no llama-server binary at {}", options.server.display()));
        }
        if !options.model_dir.is_dir() {
            return Err(format!("no model directory at {}", options.model_dir.display()));
        }
        Ok(Self { options, current: None })
    }

    /// The server's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.options.port)
    }

    fn models(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.options.model_dir)
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "gguf")).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Every name the directory's models answer to.
    pub fn model_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for file in self.models() {
            for n in names_for(&file.to_string_lossy()) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        names
    }

    /// The file a model name refers to.
    pub fn file_for(&self, model: &str) -> Option<PathBuf> {
        self.models().into_iter().find(|f| names_for(&f.to_string_lossy()).iter().any(|n| n == model))
    }

    /// Makes sure a server for `model` is running and healthy, switching if another is.
    pub async fn ensure(&mut self, model: &str) -> Result<(), String> {
        let file = self
            .file_for(model)
            .ok_or_else(|| format!("no model \"{model}\" in {}", self.options.model_dir.display()))?;
        if let Some((running, child)) = &mut self.current
            && *running == file
            && child.try_wait().is_ok_and(|s| s.is_none())
        {
            return Ok(());
        }
        self.stop().await;
        tracing::info!(model = %file.display(), port = self.options.port, "starting llama-server");
        let o = &self.options;
        let mut command = Command::new(&o.server);
        command
            .arg("-m")
            .arg(&file)
            .args(["--host", "127.0.0.1", "--port", &o.port.to_string(), "-t", &o.threads.to_string()])
            .args(["-np", &o.parallel.max(1).to_string(), "--log-disable"])
            .args(&o.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a terminal's Ctrl-C reaches the agent, which stops the
            // server once its queries are in, not the server mid-query.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(gpus) = &o.gpus {
            command.env("CUDA_VISIBLE_DEVICES", gpus);
        }
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            // If the agent dies without stopping it (kill -9, a second signal), so does the
            // server: it never outlives the agent holding its port and memory.
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGKILL)).map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().map_err(|e| format!("cannot start {}: {e}", o.server.display()))?;
        self.current = Some((file.clone(), child));
        self.wait_healthy(&file).await
    }

    async fn wait_healthy(&mut self, file: &Path) -> Result<(), String> {
        let http = ipw_proto::tls::http_client().build().map_err(|e| e.to_string())?;
        let url = format!("{}/health", self.url());
        let deadline = tokio::time::Instant::now() + STARTUP;
        loop {
            if let Some((_, child)) = &mut self.current
                && let Ok(Some(status)) = child.try_wait()
            {
                self.current = None;
                return Err(format!("llama-server for {} exited at start ({status})", file.display()));
            }
            if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                self.stop().await;
                return Err(format!("llama-server for {} was not healthy within {STARTUP:?}", file.display()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the running server, if any.
    pub async fn stop(&mut self) {
        if let Some((file, mut child)) = self.current.take() {
            tracing::info!(model = %file.display(), "stopping llama-server");
            let _ = child.kill().await;
        }
    }
}
