//! The durable spool: every measured result is on disk before it is uploaded, and leaves the
//! disk only after the coordinator acknowledges its commit.
//!
//! Results are appended to a journal, many per fsync (group commit): the agent gathers what
//! was measured over a few tens of milliseconds and writes it with one `fdatasync`, so a fast
//! engine is not held to one disk flush per query. A result appended again (with its energy,
//! once attributed) replaces the earlier copy; an acknowledgement is appended as a record of
//! its own, and a journal whose results are all acknowledged is deleted.
//!
//! Each record is framed by its length and a checksum, so a crash that tears the last write
//! leaves a tail that is recognised and ignored: what was fsynced is read back whole.
//! Acknowledgements are not fsynced, and a journal that holds them may be deleted once its own
//! results are all acknowledged: either way a crash can only send a result again, which the
//! coordinator counts as a duplicate, never twice.
//! Replaying the journals in order gives what still waits. Single-file results from older
//! agents (`<key>.result`) are read too, and deleted once acknowledged.

use ipw_proto::v1::QueryResult;
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A result's place in the spool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpoolKey(String);

impl SpoolKey {
    /// The key of a result: its `(run, query, repetition)`. Keys name files, so a run id that
    /// is not a UUID (leases are checked; this is the last guard) is hex-encoded, never a path.
    pub fn of(r: &QueryResult) -> Self {
        let run = match uuid::Uuid::parse_str(&r.run_id) {
            Ok(id) => id.to_string(),
            Err(_) => format!("x{}", hex::encode(r.run_id.as_bytes().iter().take(64).copied().collect::<Vec<u8>>())),
        };
        Self(format!("{run}_{}_{}", r.query_id, r.repetition))
    }
}

/// One journal record: a result (the latest copy of its key wins), or acknowledgements.
#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(message, optional, tag = "1")]
    result: Option<QueryResult>,
    #[prost(string, repeated, tag = "2")]
    acked: Vec<String>,
}

/// A journal grows to about this size before the next one is started.
const JOURNAL_BYTES: u64 = 8 << 20;
const JOURNAL: &str = "journal";
const LEGACY: &str = "result";

/// What the writing process knows: the journal it appends to, and which keys each journal
/// still holds unacknowledged (a journal with none left is deleted).
#[derive(Debug, Default)]
struct Writer {
    current: Option<(PathBuf, File, u64)>,
    waiting: HashMap<PathBuf, HashSet<SpoolKey>>,
    legacy: HashSet<SpoolKey>,
}

/// A directory of results waiting for acknowledgement.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    writer: Arc<Mutex<Writer>>,
}

impl Spool {
    /// Opens (creating, mode 0700) the spool in `dir`, clearing half-written temporary files.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(dir)?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(entry.path())?;
            }
        }
        let spool = Self { dir: dir.to_owned(), writer: Arc::default() };
        let replay = spool.replay()?;
        let mut w = spool.lock();
        for (key, (origin, _)) in replay {
            match origin {
                Origin::Journal(path) => {
                    w.waiting.entry(path).or_default().insert(key);
                }
                Origin::Legacy => {
                    w.legacy.insert(key);
                }
            }
        }
        drop(w);
        Ok(spool)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().expect("not poisoned")
    }

    /// Writes results durably, all with one fsync. Returns once they are on stable storage.
    pub fn append(&self, results: &[QueryResult]) -> std::io::Result<Vec<SpoolKey>> {
        let mut bytes = Vec::new();
        for r in results {
            frame(&Record { result: Some(r.clone()), acked: Vec::new() }, &mut bytes);
        }
        let mut w = self.lock();
        let path = self.write(&mut w, &bytes, true)?;
        let keys: Vec<SpoolKey> = results.iter().map(SpoolKey::of).collect();
        w.waiting.entry(path).or_default().extend(keys.iter().cloned());
        Ok(keys)
    }

    /// Writes one result durably.
    pub fn put(&self, r: &QueryResult) -> std::io::Result<SpoolKey> {
        Ok(self.append(std::slice::from_ref(r))?.remove(0))
    }

    /// Appends `bytes` to the current journal (starting one if needed), fsyncing if `durable`.
    fn write(&self, w: &mut Writer, bytes: &[u8], durable: bool) -> std::io::Result<PathBuf> {
        if w.current.as_ref().is_none_or(|c| c.2 >= JOURNAL_BYTES) {
            let name = format!(
                "{:020}-{}.{JOURNAL}",
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
                std::process::id()
            );
            let path = self.dir.join(name);
            let file = OpenOptions::new().create_new(true).append(true).open(&path)?;
            File::open(&self.dir)?.sync_all()?;
            if let Some((old, _, _)) = w.current.replace((path, file, 0)) {
                self.delete_if_done(w, &old)?;
            }
        }
        let (path, file, size) = w.current.as_mut().expect("just opened");
        file.write_all(bytes)?;
        if durable {
            file.sync_data()?;
        }
        *size += bytes.len() as u64;
        Ok(path.clone())
    }

    /// Deletes a journal that holds nothing unacknowledged and is no longer written to.
    fn delete_if_done(&self, w: &mut Writer, path: &Path) -> std::io::Result<()> {
        let current = w.current.as_ref().is_some_and(|c| c.0 == path);
        if !current && w.waiting.get(path).is_none_or(HashSet::is_empty) {
            w.waiting.remove(path);
            match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Forgets results the coordinator has committed (or that must not be sent).
    pub fn remove(&self, keys: &[SpoolKey]) -> std::io::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        frame(&Record { result: None, acked: keys.iter().map(|k| k.0.clone()).collect() }, &mut bytes);
        let mut w = self.lock();
        // Not fsynced: an acknowledgement lost in a crash only sends a result again, and the
        // coordinator counts it as a duplicate.
        self.write(&mut w, &bytes, false)?;
        let gone: HashSet<&SpoolKey> = keys.iter().collect();
        let mut emptied = Vec::new();
        for (path, waiting) in &mut w.waiting {
            let before = waiting.len();
            waiting.retain(|k| !gone.contains(k));
            if waiting.is_empty() && before > 0 {
                emptied.push(path.clone());
            }
        }
        for path in emptied {
            self.delete_if_done(&mut w, &path)?;
        }
        // Once nothing waits anywhere, the journal being written (which may hold the only record
        // of other journals' acknowledgements) can go too, and the next write starts afresh.
        if w.waiting.values().all(HashSet::is_empty)
            && let Some((path, _, _)) = w.current.take()
        {
            self.delete_if_done(&mut w, &path)?;
        }
        for key in keys.iter().filter(|k| w.legacy.contains(*k)) {
            match fs::remove_file(self.dir.join(format!("{}.{LEGACY}", key.0))) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        w.legacy.retain(|k| !gone.contains(k));
        Ok(())
    }

    /// Every result still waiting, oldest key first. A file that does not decode is renamed
    /// `*.corrupt` and reported, never silently dropped.
    pub fn pending(&self) -> std::io::Result<Vec<(SpoolKey, QueryResult)>> {
        Ok(self.replay()?.into_iter().map(|(k, (_, r))| (k, r)).collect())
    }

    /// Reads every journal (oldest first) and legacy file: the latest copy of each key not
    /// acknowledged since, and where it was read.
    fn replay(&self) -> std::io::Result<BTreeMap<SpoolKey, (Origin, QueryResult)>> {
        let mut journals = Vec::new();
        let mut out = BTreeMap::new();
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let path = entry.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some(JOURNAL) => journals.push(path),
                Some(LEGACY) => match QueryResult::decode(fs::read(&path)?.as_slice()) {
                    Ok(r) => {
                        out.insert(SpoolKey::of(&r), (Origin::Legacy, r));
                    }
                    Err(e) => set_corrupt(&path, &e.to_string())?,
                },
                _ => {}
            }
        }
        journals.sort();
        for path in journals {
            let mut bytes = Vec::new();
            match File::open(&path) {
                Ok(mut f) => f.read_to_end(&mut bytes)?,
                // Deleted by the writer meanwhile: everything in it was acknowledged.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for record in unframe(&bytes) {
                if let Some(r) = record.result {
                    out.insert(SpoolKey::of(&r), (Origin::Journal(path.clone()), r));
                }
                for k in record.acked {
                    out.remove(&SpoolKey(k));
                }
            }
        }
        Ok(out)
    }

    /// Bytes the agent may still write on the spool's file system.
    // The statvfs field types differ by platform (u32 on macOS), so the conversions stay.
    #[allow(clippy::useless_conversion)]
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        let s = nix::sys::statvfs::statvfs(&self.dir).map_err(std::io::Error::from)?;
        Ok(u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())))
    }

    /// Whether results can be kept safely now: at least `min_free` bytes free, and a probe
    /// written, fsynced and removed. The error says what is wrong, for an operator.
    pub fn check_writable(&self, min_free: u64) -> Result<(), String> {
        let dir = self.dir.display();
        let free = self.free_bytes().map_err(|e| format!("cannot read free space of spool {dir}: {e}"))?;
        if free < min_free {
            return Err(format!(
                "spool {dir} has {} MiB free, less than the {} MiB required (--spool-min-free-mib)",
                free >> 20,
                min_free >> 20
            ));
        }
        let probe = self.dir.join(".probe.tmp");
        let written = File::create(&probe).and_then(|mut f| {
            f.write_all(&[0u8; 4096])?;
            f.sync_all()
        });
        let _ = fs::remove_file(&probe);
        written.map_err(|e| format!("cannot write to spool {dir}: {e}"))
    }

    /// Sets aside a result the coordinator refused: kept as `<key>.rejected` (never uploaded
    /// again, never deleted) for an operator to look at.
    pub fn reject(&self, key: &SpoolKey, r: &QueryResult) -> std::io::Result<()> {
        let rejected = self.dir.join(format!("{}.rejected", key.0));
        fs::write(&rejected, r.encode_to_vec())?;
        File::open(&rejected)?.sync_all()?;
        self.remove(std::slice::from_ref(key))
    }

    /// How many results are waiting.
    pub fn len(&self) -> std::io::Result<usize> {
        Ok(self.replay()?.len())
    }

    /// How many results are waiting, from memory (no file is read): for the metrics.
    pub fn waiting(&self) -> usize {
        let w = self.lock();
        w.waiting.values().map(HashSet::len).sum::<usize>() + w.legacy.len()
    }

    /// Bytes of the spool's files (journals, set-aside and legacy results).
    pub fn disk_bytes(&self) -> std::io::Result<u64> {
        Ok(fs::read_dir(&self.dir)?.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// Where a waiting result was read from.
#[derive(Debug)]
enum Origin {
    Journal(PathBuf),
    Legacy,
}

fn set_corrupt(path: &Path, why: &str) -> std::io::Result<()> {
    tracing::error!(file = %path.display(), error = why, "spooled result does not decode; kept as .corrupt");
    fs::rename(path, path.with_extension("corrupt"))
}

/// FNV-1a: enough to tell a torn or zero-filled tail from a record.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Appends `record` as length, checksum, bytes.
fn frame(record: &Record, out: &mut Vec<u8>) {
    let body = record.encode_to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// The whole records of a journal, up to the first torn or damaged one (a crash mid-write).
fn unframe(mut bytes: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while bytes.len() >= 8 {
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let Some(body) = bytes.get(8..8 + len) else { break };
        if checksum(body) != sum {
            break;
        }
        match Record::decode(body) {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
        bytes = &bytes[8 + len..];
    }
    if !bytes.is_empty() {
        tracing::warn!(bytes = bytes.len(), "a spool journal ends in a torn write (a crash mid-append); ignored");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "01a23540-0000-7000-8000-000000000001";

    fn result(q: i64) -> QueryResult {
        QueryResult { run_id: RUN.into(), query_id: q, response: format!("answer {q}"), ..Default::default() }
    }

    fn journals(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == JOURNAL)).count()
    }

    #[test]
    fn a_run_id_that_is_not_a_uuid_never_becomes_a_path() {
        let evil = QueryResult { run_id: "../../etc/cron.d/x".into(), query_id: 1, ..Default::default() };
        let key = SpoolKey::of(&evil);
        assert!(!key.0.contains('/') && !key.0.contains(".."), "{key:?}");
        let id = uuid::Uuid::now_v7();
        assert_eq!(
            SpoolKey::of(&QueryResult { run_id: id.to_string(), query_id: 3, repetition: 1, ..Default::default() }).0,
            format!("{id}_3_1")
        );
        let lease =
            |run: &str| ipw_proto::v1::Lease { run_id: run.into(), shard_id: id.to_string(), ..Default::default() };
        assert!(crate::leases::checked(lease("/abs")).unwrap_err().message().contains("not a UUID"));
        assert!(crate::leases::checked(lease(&id.to_string())).is_ok());
    }

    #[test]
    fn appended_results_survive_reopen_and_acknowledged_ones_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let keys = spool.append(&[result(1), result(2)]).unwrap();
        // Appending the same key again replaces it (the copy with energy), never duplicates.
        let mut with_energy = result(2);
        with_energy.response = "answer 2, attributed".into();
        spool.put(&with_energy).unwrap();
        fs::write(dir.path().join("half.tmp"), b"partial").unwrap();

        let reopened = Spool::open(dir.path()).unwrap();
        let pending = reopened.pending().unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].1, result(1));
        assert_eq!(pending[1].1, with_energy);
        assert!(!dir.path().join("half.tmp").exists());

        reopened.remove(&keys[..1]).unwrap();
        assert_eq!(reopened.len().unwrap(), 1);
        reopened.remove(&keys[1..]).unwrap();
        assert!(reopened.is_empty().unwrap());
        assert_eq!(journals(dir.path()), 0, "a journal with nothing waiting is deleted");
    }

    #[test]
    fn a_torn_tail_is_ignored_and_what_was_synced_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.append(&[result(1), result(2)]).unwrap();
        drop(spool);
        let path = fs::read_dir(dir.path()).unwrap().flatten().next().unwrap().path();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let mut torn = Vec::new();
        frame(&Record { result: Some(result(3)), acked: Vec::new() }, &mut torn);
        f.write_all(&torn[..torn.len() - 3]).unwrap();
        f.write_all(&[0u8; 64]).unwrap();
        let pending = Spool::open(dir.path()).unwrap().pending().unwrap();
        assert_eq!(pending.iter().map(|p| p.1.query_id).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn results_from_an_older_agent_are_read_and_deleted_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{RUN}_7_0.result")), result(7).encode_to_vec()).unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let pending = spool.pending().unwrap();
        assert_eq!(pending.len(), 1);
        spool.remove(&[pending[0].0.clone()]).unwrap();
        assert!(!dir.path().join(format!("{RUN}_7_0.result")).exists());
        assert!(spool.is_empty().unwrap());
    }

    #[test]
    fn a_full_disk_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert!(spool.free_bytes().unwrap() > 0);
        spool.check_writable(0).unwrap();
        let e = spool.check_writable(u64::MAX).unwrap_err();
        assert!(e.contains("less than the") && e.contains("--spool-min-free-mib"), "{e}");
        // /dev/full fails every write with ENOSPC, as a full disk does.
        std::os::unix::fs::symlink("/dev/full", dir.path().join(".probe.tmp")).unwrap();
        let e = spool.check_writable(0).unwrap_err();
        assert!(e.contains("No space left on device"), "{e}");
    }

    #[test]
    fn corrupt_files_are_set_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        fs::write(dir.path().join("bad.result"), [0xff, 0xff, 0xff]).unwrap();
        assert!(spool.pending().unwrap().is_empty());
        assert!(dir.path().join("bad.corrupt").exists());
    }
}
