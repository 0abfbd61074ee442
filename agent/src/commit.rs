//! From a measured result to a committed one, off the measuring loop.
//!
//! Two tasks, so a coordinator that is away never holds up the disk:
//! - the *spooler* writes what was measured to the spool every [`GROUP_COMMIT`] with one
//!   fsync, waits for each result's energy (the session's ledger attributes it within a second
//!   or two), writes the result again with its energy, and passes results on in order;
//! - the *uploader* streams them to the coordinator about every [`UPLOAD_EVERY`], and acts on
//!   the session's markers (complete a shard, give leases back) once everything before them
//!   is committed.
//!
//! Nothing is acknowledged to anyone before it is on disk, and a result leaves the spool only
//! when the coordinator has committed it.

use crate::client::Coordinator;
use crate::leases::HeldLease;
use crate::power::NoPower;
use crate::runner::{RunOptions, complete_shard, patiently, upload_patiently};
use crate::spool::{Spool, SpoolKey};
use ipw_proto::kinds::Attribution;
use ipw_proto::v1::{Energy, EngineFailure, QueryResult, ReleaseLeasesRequest};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::Instant;

/// How long measured results gather before one fsync writes them all.
pub const GROUP_COMMIT: Duration = Duration::from_millis(50);
/// How often results are streamed to the coordinator.
pub const UPLOAD_EVERY: Duration = Duration::from_secs(1);

/// What the session tells the committer, in order.
#[derive(Debug)]
pub enum Msg {
    /// A measured result; with `energy_id`, its energy follows in an [`Msg::Energy`].
    Measured {
        /// The result (its energy already set when there is no ledger entry).
        result: Box<QueryResult>,
        /// The ledger's id for the query.
        energy_id: Option<u64>,
    },
    /// The energy of the query with this ledger id.
    Energy(u64, Energy),
    /// A shard's queries are all measured: complete it once its results are committed (it is
    /// named in heartbeats until then).
    Complete(HeldLease),
    /// Give these leases back, with the engine's failures, once what came before is committed.
    GiveBack(Vec<HeldLease>, Vec<EngineFailure>),
    /// A lease was lost: its results not yet sent are dropped.
    Drop(String),
}

/// What reached the coordinator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// Results newly committed.
    pub committed: u64,
    /// Results the coordinator already had.
    pub duplicates: u64,
    /// Shards completed.
    pub shards: u32,
}

/// Passed from the spooler to the uploader.
enum Up {
    Results(Vec<(SpoolKey, QueryResult)>),
    Complete(HeldLease),
    GiveBack(Vec<HeldLease>, Vec<EngineFailure>),
}

/// A result waiting for its energy, or a marker waiting for the results before it.
enum Slot {
    Result { key: SpoolKey, result: Box<QueryResult>, awaiting: bool, rewrite: bool },
    Marker(Up),
}

/// Starts the committer; returns where to send to it and the task that ends, with what was
/// committed, once the sender is dropped and everything is sent.
pub fn start(
    coord: Coordinator,
    spool: Spool,
    opts: RunOptions,
) -> (UnboundedSender<Msg>, tokio::task::JoinHandle<anyhow::Result<Committed>>) {
    let (tx, rx) = unbounded_channel();
    let (up_tx, up_rx) = unbounded_channel();
    let spooler = tokio::spawn(spooler(rx, spool.clone(), up_tx));
    let task = tokio::spawn(async move {
        let uploaded = uploader(up_rx, coord, spool, opts).await;
        spooler.await??;
        uploaded
    });
    (tx, task)
}

async fn spooler(mut rx: UnboundedReceiver<Msg>, spool: Spool, up: UnboundedSender<Up>) -> anyhow::Result<()> {
    let mut queue: VecDeque<Slot> = VecDeque::new();
    let mut by_energy: HashMap<u64, SpoolKey> = HashMap::new();
    let mut open = true;
    while open {
        let (mut fresh, mut lost) = (Vec::new(), Vec::new());
        let Some(first) = rx.recv().await else { break };
        let deadline = Instant::now() + GROUP_COMMIT;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Measured { result, energy_id } => {
                    let key = SpoolKey::of(&result);
                    if let Some(id) = energy_id {
                        by_energy.insert(id, key.clone());
                    }
                    fresh.push((*result).clone());
                    queue.push_back(Slot::Result { key, result, awaiting: energy_id.is_some(), rewrite: false });
                }
                Msg::Energy(id, energy) => attach(&mut queue, by_energy.remove(&id), energy),
                Msg::Complete(shard) => queue.push_back(Slot::Marker(Up::Complete(shard))),
                Msg::GiveBack(shards, failures) => queue.push_back(Slot::Marker(Up::GiveBack(shards, failures))),
                Msg::Drop(shard) => lost.push(shard),
            }
            next = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => Some(m),
                Ok(None) => {
                    open = false;
                    None
                }
                Err(_) => None,
            };
        }
        write(&spool, fresh).await;
        for shard in lost {
            drop_shard(&spool, &mut queue, &shard).await;
        }
        pass_ready(&spool, &mut queue, &up, !open).await?;
    }
    pass_ready(&spool, &mut queue, &up, true).await
}

/// Sets a waiting result's energy.
fn attach(queue: &mut VecDeque<Slot>, key: Option<SpoolKey>, energy: Energy) {
    let Some(key) = key else { return };
    // Energies come roughly in the order results were queued: search from the front.
    for slot in queue.iter_mut() {
        if let Slot::Result { key: k, result, awaiting, rewrite } = slot
            && *k == key
        {
            result.energy = Some(energy);
            (*awaiting, *rewrite) = (false, true);
            return;
        }
    }
}

/// Drops a lost lease's results that are still here: another agent measures them now.
async fn drop_shard(spool: &Spool, queue: &mut VecDeque<Slot>, shard: &str) {
    let mut keys = Vec::new();
    queue.retain(|s| match s {
        Slot::Result { key, result, .. } if result.shard_id == shard => {
            keys.push(key.clone());
            false
        }
        _ => true,
    });
    tracing::warn!(shard, dropped = keys.len(), "lease lost: its results not yet sent were dropped");
    let spool = spool.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || spool.remove(&keys)).await {
        tracing::error!(error = %e, "dropping a lost lease's results failed");
    }
}

/// Writes results durably with one fsync. A spool that cannot take them (a full disk) is
/// reported loudly; they stay in memory and are uploaded all the same, never dropped.
async fn write(spool: &Spool, results: Vec<QueryResult>) {
    if results.is_empty() {
        return;
    }
    let writer = spool.clone();
    let written = tokio::task::spawn_blocking(move || writer.append(&results)).await;
    if let Err(e) = written.map_err(anyhow::Error::from).and_then(|r| r.map_err(anyhow::Error::from)) {
        tracing::error!(
            spool = %spool.dir().display(),
            error = %e,
            "CANNOT WRITE TO THE SPOOL: results are kept in memory until uploaded; no new work until this is fixed"
        );
    }
}

/// Passes on the results at the front that have their energy (all of them, at the end),
/// rewritten with it first, and the markers between them.
async fn pass_ready(
    spool: &Spool,
    queue: &mut VecDeque<Slot>,
    up: &UnboundedSender<Up>,
    all: bool,
) -> anyhow::Result<()> {
    let mut ready = Vec::new();
    let mut rewrite = Vec::new();
    while let Some(slot) = queue.front() {
        if matches!(slot, Slot::Result { awaiting: true, .. }) && !all {
            break;
        }
        match queue.pop_front().expect("a front") {
            Slot::Result { key, mut result, awaiting, rewrite: again } => {
                if awaiting {
                    result.energy = Some(
                        NoPower::new("the session ended before this result's energy was attributed")
                            .energy_record(Attribution::TimeShare),
                    );
                }
                if again || awaiting {
                    rewrite.push((*result).clone());
                }
                ready.push((key, *result));
            }
            Slot::Marker(m) => {
                write(spool, std::mem::take(&mut rewrite)).await;
                if !ready.is_empty() {
                    send(up, Up::Results(std::mem::take(&mut ready)))?;
                }
                send(up, m)?;
            }
        }
    }
    write(spool, rewrite).await;
    if !ready.is_empty() {
        send(up, Up::Results(ready))?;
    }
    Ok(())
}

fn send(up: &UnboundedSender<Up>, m: Up) -> anyhow::Result<()> {
    up.send(m).map_err(|_| anyhow::anyhow!("the uploader stopped"))
}

async fn uploader(
    mut rx: UnboundedReceiver<Up>,
    mut coord: Coordinator,
    spool: Spool,
    opts: RunOptions,
) -> anyhow::Result<Committed> {
    let mut done = Committed::default();
    let mut batch: Vec<(SpoolKey, QueryResult)> = Vec::new();
    let mut marker = None;
    let mut open = true;
    while open || !batch.is_empty() || marker.is_some() {
        if open && marker.is_none() {
            let deadline = Instant::now() + UPLOAD_EVERY;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(Up::Results(r))) => batch.extend(r),
                    Ok(Some(m)) => {
                        marker = Some(m);
                        break;
                    }
                    Ok(None) => {
                        open = false;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        if !batch.is_empty() {
            let (c, d) = upload_patiently(&mut coord, &spool, std::mem::take(&mut batch), &opts).await?;
            (done.committed, done.duplicates) = (done.committed + c, done.duplicates + d);
        }
        match marker.take() {
            Some(Up::Complete(held)) => {
                done.shards += u32::from(complete_shard(&mut coord, held.shard_id(), &opts).await);
            }
            Some(Up::GiveBack(held, failures)) => {
                // No longer named in heartbeats: a heartbeat racing the release must not renew them.
                held.iter().for_each(HeldLease::stop_naming);
                let shards = held.iter().map(|h| h.shard_id().to_owned()).collect();
                give_back(&mut coord, shards, failures, &opts).await;
            }
            Some(Up::Results(_)) | None => {}
        }
    }
    Ok(done)
}

/// Gives leases back at once, with the engine's failures, so their unanswered queries are
/// leased again without waiting for the leases to run out. If the coordinator cannot be told,
/// they run out as usual.
pub async fn give_back(
    coord: &mut Coordinator,
    shard_ids: Vec<String>,
    failures: Vec<EngineFailure>,
    opts: &RunOptions,
) {
    if shard_ids.is_empty() {
        return;
    }
    let request = ReleaseLeasesRequest { shard_ids, engine_failures: failures };
    let released = patiently("give leases back", opts.patience(), || {
        let (mut c, r) = (coord.clone(), request.clone());
        async move { c.release_leases(r).await }
    })
    .await;
    match released {
        Ok(r) => {
            let r = r.into_inner();
            tracing::info!(shards = ?request.shard_ids, recorded_as_errors = r.recorded_as_errors, "leases given back")
        }
        Err(s) => {
            tracing::warn!(shards = ?request.shard_ids, "giving leases back failed ({}); they will run out", s.message())
        }
    }
}
