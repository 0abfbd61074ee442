//! The source of last resort: no reading at all, and the reason why.

use ipw_proto::v1::Energy;

/// Stands in when nothing can be read. It never produces a number.
#[derive(Debug, Clone)]
pub struct NoPower {
    reason: String,
}

impl NoPower {
    /// Records why no energy could be measured.
    pub fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }

    /// The energy record of a result measured without power data.
    pub fn energy_record(&self, attribution: ipw_proto::kinds::Attribution) -> Energy {
        Energy {
            energy_j: None,
            dynamic_energy_j: None,
            source: "none".into(),
            scope: String::new(),
            sample_hz: 0.0,
            attribution: attribution.as_str().into(),
            null_reason: self.reason.clone(),
            prefill_energy_j: None,
            decode_energy_j: None,
        }
    }
}
