//! The leases this agent is working on, shared between the lease loop and the heartbeat.
//!
//! The heartbeat names exactly these shards, so only they are renewed: a lease from an earlier
//! life of the agent (before a crash and restart) is not named and runs out. When the
//! coordinator answers that a named lease is lost (it ran out and moved, the run was
//! cancelled), the shard's work is told to stop.

use ipw_proto::v1::{HeartbeatResponse, Lease};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A lease as the coordinator sent it, refused unless its run and shard ids are UUIDs: they
/// become spool file names, and `../` must not.
pub fn checked(lease: Lease) -> Result<Lease, tonic::Status> {
    for (what, id) in [("run", &lease.run_id), ("shard", &lease.shard_id)] {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(tonic::Status::invalid_argument(format!(
                "the coordinator sent a lease whose {what} id {id:?} is not a UUID"
            )));
        }
    }
    Ok(lease)
}

/// The shards in progress, each with a signal that fires if its lease is lost.
#[derive(Debug, Clone, Default)]
pub struct Held(Arc<Mutex<HashMap<String, watch::Sender<bool>>>>);

/// One held lease: `lost()` resolves if the coordinator says it is gone. Dropping it stops
/// naming the shard in heartbeats.
#[derive(Debug)]
pub struct HeldLease {
    held: Held,
    shard_id: String,
    lost: watch::Receiver<bool>,
}

impl Held {
    /// Starts naming `shard_id` in heartbeats.
    pub fn hold(&self, shard_id: &str) -> HeldLease {
        let (tx, rx) = watch::channel(false);
        self.0.lock().expect("not poisoned").insert(shard_id.to_owned(), tx);
        HeldLease { held: self.clone(), shard_id: shard_id.to_owned(), lost: rx }
    }

    /// The shards to name in the next heartbeat.
    pub fn shard_ids(&self) -> Vec<String> {
        self.0.lock().expect("not poisoned").keys().cloned().collect()
    }

    /// Acts on a heartbeat's answer: each lost shard's work is told to stop.
    pub fn apply(&self, response: &HeartbeatResponse) {
        let held = self.0.lock().expect("not poisoned");
        for id in &response.lost_shard_ids {
            if let Some(tx) = held.get(id) {
                tracing::warn!(shard = %id, "the coordinator says this lease is lost; stopping the shard");
                let _ = tx.send(true);
            }
        }
    }
}

impl HeldLease {
    /// Resolves once the lease is known to be lost (never, while it is held).
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// Whether the lease is known to be lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// The shard this lease is for.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// Stops naming the shard in heartbeats (it is being given back).
    pub fn stop_naming(&self) {
        self.held.0.lock().expect("not poisoned").remove(&self.shard_id);
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.held.0.lock().expect("not poisoned").remove(&self.shard_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lost_lease_signals_its_work_and_a_dropped_one_is_no_longer_named() {
        let held = Held::default();
        let a = held.hold("a");
        let b = held.hold("b");
        let mut named = held.shard_ids();
        named.sort();
        assert_eq!(named, ["a", "b"]);
        held.apply(&HeartbeatResponse { lost_shard_ids: vec!["a".into(), "zzz".into()], ..Default::default() });
        tokio::time::timeout(std::time::Duration::from_secs(1), a.lost()).await.expect("a is lost");
        assert!(a.is_lost() && !b.is_lost());
        drop(a);
        assert_eq!(held.shard_ids(), ["b"]);
    }
}
