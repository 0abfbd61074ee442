//! What the machine is: CPU, memory, OS and NVIDIA GPUs (through NVML, when a driver is there).

use ipw_proto::v1::{Accelerator, HardwareInfo};
use nvml_wrapper::Nvml;

/// Probes this machine. Never fails: what cannot be read is left empty.
pub fn probe() -> HardwareInfo {
    let sys = sysinfo::System::new_with_specifics(
        sysinfo::RefreshKind::nothing()
            .with_cpu(sysinfo::CpuRefreshKind::nothing())
            .with_memory(sysinfo::MemoryRefreshKind::nothing().with_ram()),
    );
    let (cpu_model, cpu_cores, memory_bytes) = match &sys {
        Ok(sys) => (
            sys.cpus().first().map(|c| c.brand().trim().to_owned()).unwrap_or_default(),
            sys.cpus().len() as u32,
            sys.total_memory(),
        ),
        Err(_) => (String::new(), 0, 0),
    };
    HardwareInfo {
        hostname: sysinfo::System::host_name().unwrap_or_default(),
        os: sysinfo::System::long_os_version().unwrap_or_default(),
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        cpu_model,
        cpu_cores,
        memory_bytes,
        accelerators: nvidia_gpus().unwrap_or_default(),
    }
}

/// NVIDIA GPUs visible through NVML, or why there are none.
pub fn nvidia_gpus() -> Result<Vec<Accelerator>, String> {
    let nvml = Nvml::init().map_err(|e| format!("NVML unavailable: {e}"))?;
    let driver = nvml.sys_driver_version().unwrap_or_default();
    let count = nvml.device_count().map_err(|e| format!("NVML device count: {e}"))?;
    (0..count)
        .map(|i| {
            let d = nvml.device_by_index(i).map_err(|e| format!("NVML device {i}: {e}"))?;
            Ok(Accelerator {
                index: i,
                vendor: "nvidia".into(),
                model: d.name().unwrap_or_default(),
                memory_bytes: d.memory_info().map(|m| m.total).unwrap_or(0),
                driver_version: driver.clone(),
                uuid: d.uuid().unwrap_or_default(),
            })
        })
        .collect()
}

/// The NVIDIA driver and CUDA driver versions, when NVML answers.
pub fn nvidia_versions() -> (Option<String>, Option<String>) {
    let Ok(nvml) = Nvml::init() else { return (None, None) };
    let driver = nvml.sys_driver_version().ok();
    let cuda = nvml.sys_cuda_driver_version().ok().map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10));
    (driver, cuda)
}
