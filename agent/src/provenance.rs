//! What a run was measured with: the agent build, the engine and its model, drivers, OS, CPU
//! and power settings. Sent once per (run, agent).

use crate::engine::Engine;
use crate::hardware;
use ipw_proto::openai::{Props, Version};
use ipw_proto::v1::{HardwareInfo, Provenance};
use regex::Regex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

/// The agent's version and the git revision it was built from.
pub const GIT_REVISION: &str = env!("IPW_GIT_REVISION");

/// What the engine says about itself and its model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineInfo {
    /// llama.cpp, vllm, ollama, or the server's own name.
    pub name: String,
    /// Its reported version or build.
    pub version: String,
    /// The model as the server names it.
    pub model: String,
    /// A local model file the server reported.
    pub model_path: Option<PathBuf>,
    /// Quantization, as reported (or read from the model's file name).
    pub quantization: Option<String>,
}

static QUANT_IN_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(I?Q\d+(?:_[A-Z0-9]+)*|BF16|F16|F32)\b").expect("valid regex"));

/// A quantization tag in a model file name: `SmolLM2-135M-Instruct.Q4_1.gguf` gives `Q4_1`.
pub fn quantization_in_name(name: &str) -> Option<String> {
    let stem = Path::new(name).file_name()?.to_string_lossy().replace(['.', '-'], " ");
    QUANT_IN_NAME.find_iter(&stem).last().map(|m| m.as_str().to_uppercase())
}

/// Reads what the engine reports: llama.cpp's `/props`, vLLM's `/version`, Ollama's
/// `/api/version`, then `/v1/models` for the model.
pub async fn probe_engine(engine: &Engine) -> EngineInfo {
    let client = engine.client();
    let mut info = EngineInfo::default();
    if let Some(props) = client.props().await.filter(Props::is_llama_cpp) {
        info.name = "llama.cpp".into();
        info.version = props.build_info.unwrap_or_default();
        info.model_path = props.model_path.map(PathBuf::from);
        info.quantization = props.model_ftype;
    } else if let Some(v) = client.get_optional::<Version>("/version").await.and_then(|v| v.version) {
        info.name = "vllm".into();
        info.version = v;
    } else if let Some(v) = client.get_optional::<Version>("/api/version").await.and_then(|v| v.version) {
        info.name = "ollama".into();
        info.version = v;
    }
    if let Ok(models) = client.models().await
        && let Some(first) = models.data.into_iter().next()
    {
        info.model = first.id;
        if info.name.is_empty() {
            info.name = first.owned_by.unwrap_or_else(|| "openai-compatible".to_owned());
        }
        if info.quantization.is_none() {
            info.quantization = first.meta.and_then(|m| m.ftype);
        }
    }
    if info.quantization.is_none() {
        info.quantization = quantization_in_name(&info.model);
    }
    info
}

/// Hashes already computed, by (path, length, modification time): a model file is hashed
/// once per agent, not once per run.
type FileIdentity = (PathBuf, u64, SystemTime);
static HASHES: LazyLock<Mutex<HashMap<FileIdentity, String>>> = LazyLock::new(Mutex::default);

/// The sha256 of a file, hex. With `cache` (a JSON file in the agent's state), a hash also
/// survives the agent's restarts: a 70 GB model is not read again for every process.
pub fn file_sha256(path: &Path, cache: Option<&Path>) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let key = (path.to_owned(), meta.len(), meta.modified()?);
    if let Some(h) = HASHES.lock().expect("not poisoned").get(&key) {
        return Ok(h.clone());
    }
    let stamp = format!(
        "{}|{}|{}",
        path.display(),
        meta.len(),
        key.2.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    );
    let mut stored: HashMap<String, String> =
        cache.and_then(|c| std::fs::read(c).ok()).and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let hex = match stored.get(&stamp) {
        Some(h) => h.clone(),
        None => {
            let hex = hash_file(path)?;
            stored.insert(stamp, hex.clone());
            if let Some(c) = cache {
                // Written whole or not at all; a cache that cannot be written only costs a re-hash.
                let tmp = c.with_extension("tmp");
                let _ = std::fs::write(&tmp, serde_json::to_vec(&stored).unwrap_or_default())
                    .and_then(|()| std::fs::rename(&tmp, c));
            }
            hex
        }
    };
    HASHES.lock().expect("not poisoned").insert(key, hex.clone());
    Ok(hex)
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The provenance record for `run_id`. `power_details` are the power sources' own details
/// (NVML power limits and clocks, RAPL zones, ...) and `power_scope` the IPW scope and the
/// GPU selection; `hash_cache` keeps model hashes across restarts (see [`file_sha256`]).
pub async fn collect(
    run_id: &str,
    engine: &Engine,
    power_details: Vec<serde_json::Value>,
    power_scope: serde_json::Value,
    hash_cache: Option<PathBuf>,
) -> Provenance {
    let info = probe_engine(engine).await;
    let model_sha256 = match &info.model_path {
        Some(path) => {
            let path = path.clone();
            let hashed = tokio::task::spawn_blocking(move || file_sha256(&path, hash_cache.as_deref())).await;
            hashed.ok().and_then(|r| r.ok()).unwrap_or_default()
        }
        None => String::new(),
    };
    let hw = tokio::task::spawn_blocking(hardware::probe).await.unwrap_or_default();
    let (driver_version, cuda_version) = hardware::nvidia_versions();
    let power_limit_w = power_details.iter().find_map(|d| d["details"]["power_limit_w"].as_f64());
    Provenance {
        model_sha256,
        driver_version: driver_version.unwrap_or_default(),
        cuda_version: cuda_version.unwrap_or_default(),
        rocm_version: std::fs::read_to_string("/sys/module/amdgpu/version")
            .map(|v| v.trim().to_owned())
            .unwrap_or_default(),
        power_limit_w,
        details_json: serde_json::json!({
            "hostname": hw.hostname,
            "cpu_cores": hw.cpu_cores,
            "memory_bytes": hw.memory_bytes,
            "accelerators": hw.accelerators.iter().map(|a| serde_json::json!({
                "vendor": a.vendor, "model": a.model, "memory_bytes": a.memory_bytes, "uuid": a.uuid,
            })).collect::<Vec<_>>(),
            "power_sources": power_details,
            "ipw_scope": power_scope["ipw_scope"],
            "gpu_selection": power_scope["gpu_selection"],
        })
        .to_string(),
        ..common(run_id, info, &hw)
    }
}

/// What every record holds: the run, this agent's build, the engine and its model as it
/// describes them, and this machine's OS and CPU.
fn common(run_id: &str, info: EngineInfo, hw: &HardwareInfo) -> Provenance {
    Provenance {
        run_id: run_id.to_owned(),
        agent_version: crate::VERSION.to_owned(),
        agent_git_revision: GIT_REVISION.to_owned(),
        engine_name: info.name,
        engine_version: info.version,
        engine_model: info.model,
        quantization: info.quantization.unwrap_or_default(),
        os: hw.os.clone(),
        kernel: hw.kernel.clone(),
        cpu_model: hw.cpu_model.clone(),
        ..Provenance::default()
    }
}

/// The provenance record for `run_id` on a remote endpoint (`--engine-remote`): what the
/// endpoint says about itself and its model, and this machine's OS and CPU as the client's.
/// Nothing local stands for the endpoint: no power sources or drivers, and a model path the
/// endpoint reports is on its machine, so it is never hashed here.
pub async fn collect_remote(run_id: &str, engine: &Engine) -> Provenance {
    let info = probe_engine(engine).await;
    let hw = tokio::task::spawn_blocking(hardware::probe).await.unwrap_or_default();
    Provenance {
        details_json: serde_json::json!({"client_hostname": hw.hostname}).to_string(),
        engine_remote: true,
        ..common(run_id, info, &hw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_is_read_from_gguf_names() {
        assert_eq!(quantization_in_name("/m/SmolLM2-135M-Instruct.Q4_1.gguf").as_deref(), Some("Q4_1"));
        assert_eq!(quantization_in_name("llama-3-8b-instruct-q4_k_m.gguf").as_deref(), Some("Q4_K_M"));
        assert_eq!(quantization_in_name("qwen2.5-7b-instruct-bf16.gguf").as_deref(), Some("BF16"));
        assert_eq!(quantization_in_name("model-iq3_xxs.gguf").as_deref(), Some("IQ3_XXS"));
        assert_eq!(quantization_in_name("gpt-oss-20b"), None);
    }

    #[test]
    fn file_hashes_are_sha256_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.gguf");
        std::fs::write(&f, b"abc").unwrap();
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let cache = dir.path().join("hashes.json");
        assert_eq!(file_sha256(&f, Some(&cache)).unwrap(), want);
        assert_eq!(file_sha256(&f, None).unwrap(), want);
        // A later process finds it in the cache file, keyed by path, length and mtime.
        let stored: HashMap<String, String> = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
        assert_eq!(stored.values().collect::<Vec<_>>(), [want]);
        assert!(stored.keys().all(|k| k.starts_with(&format!("{}|3|", f.display()))));
    }
}
