//! Hardware classes: the canonical description under which agents are interchangeable.

use ipw_proto::v1::HardwareInfo;

const GIB: f64 = (1u64 << 30) as f64;

/// The hardware class of a machine: its accelerators (vendor, model, memory, count), or its
/// CPU when it has none. Computed on the coordinator so every agent is named the same way.
///
/// Examples: `gpu:nvidia:NVIDIA H100 80GB HBM3:80GiB:x8`, `cpu:AMD EPYC 7B13:2c:24GiB`.
pub fn class_of(hw: &HardwareInfo) -> String {
    if hw.accelerators.is_empty() {
        return format!("cpu:{}:{}c:{}GiB", tidy(&hw.cpu_model), hw.cpu_cores, (hw.memory_bytes as f64 / GIB).round());
    }
    // Group identical devices, keeping first-seen order so mixed boxes read naturally.
    let mut groups: Vec<(String, usize)> = Vec::new();
    for a in &hw.accelerators {
        let key = format!(
            "gpu:{}:{}:{}GiB",
            tidy(&a.vendor).to_lowercase(),
            tidy(&a.model),
            (a.memory_bytes as f64 / GIB).round()
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => groups.push((key, 1)),
        }
    }
    groups.iter().map(|(k, n)| format!("{k}:x{n}")).collect::<Vec<_>>().join("+")
}

/// Collapses whitespace and removes the separator, so a class is one unambiguous string.
fn tidy(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ").replace([':', '+'], "-");
    if s.is_empty() { "unknown".to_owned() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipw_proto::v1::Accelerator;

    fn gpu(model: &str, gib: u64) -> Accelerator {
        Accelerator { vendor: "NVIDIA".into(), model: model.into(), memory_bytes: gib << 30, ..Default::default() }
    }

    #[test]
    fn cpu_class_names_model_cores_and_memory() {
        let hw = HardwareInfo {
            cpu_model: "AMD  EPYC 7B13".into(),
            cpu_cores: 2,
            memory_bytes: 25_000_000_000,
            ..Default::default()
        };
        assert_eq!(class_of(&hw), "cpu:AMD EPYC 7B13:2c:23GiB");
    }

    #[test]
    fn gpus_are_grouped_and_counted() {
        let hw = HardwareInfo {
            accelerators: vec![gpu("H100", 80), gpu("H100", 80), gpu("RTX 4090", 24)],
            ..Default::default()
        };
        assert_eq!(class_of(&hw), "gpu:nvidia:H100:80GiB:x2+gpu:nvidia:RTX 4090:24GiB:x1");
    }
}
