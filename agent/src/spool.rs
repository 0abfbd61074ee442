//! The durable spool: every measured result is on disk (fsynced) before it is uploaded, and
//! leaves the disk only after the coordinator acknowledges its commit.
//!
//! One file per result, named by its idempotency key `(run, query, repetition)`, holding the
//! protobuf-encoded `QueryResult`. Writes go to a temporary file that is fsynced and renamed,
//! then the directory is fsynced, so a crash leaves either the whole result or nothing.

use ipw_proto::v1::QueryResult;
use prost::Message;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A result's place in the spool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpoolKey(String);

impl SpoolKey {
    /// The key of a result: its `(run, query, repetition)`.
    pub fn of(r: &QueryResult) -> Self {
        Self(format!("{}_{}_{}", r.run_id, r.query_id, r.repetition))
    }
}

/// A directory of results waiting for acknowledgement.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

const EXT: &str = "result";

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
        Ok(Self { dir: dir.to_owned() })
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &SpoolKey) -> PathBuf {
        self.dir.join(format!("{}.{EXT}", key.0))
    }

    /// Writes a result durably. Returns once it is on stable storage.
    pub fn put(&self, r: &QueryResult) -> std::io::Result<SpoolKey> {
        let key = SpoolKey::of(r);
        let tmp = self.dir.join(format!("{}.tmp", key.0));
        let mut f = File::create(&tmp)?;
        f.write_all(&r.encode_to_vec())?;
        f.sync_all()?;
        fs::rename(&tmp, self.path(&key))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(key)
    }

    /// Forgets results the coordinator has committed.
    pub fn remove(&self, keys: &[SpoolKey]) -> std::io::Result<()> {
        for key in keys {
            match fs::remove_file(self.path(key)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        File::open(&self.dir)?.sync_all()
    }

    /// Every result still waiting, oldest key first. A file that does not decode is renamed
    /// `*.corrupt` and reported, never silently dropped.
    pub fn pending(&self) -> std::io::Result<Vec<(SpoolKey, QueryResult)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != EXT) {
                continue;
            }
            let bytes = fs::read(&path)?;
            match QueryResult::decode(bytes.as_slice()) {
                Ok(r) => out.push((SpoolKey::of(&r), r)),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "spooled result does not decode; kept as .corrupt");
                    fs::rename(&path, path.with_extension("corrupt"))?;
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
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
        Ok(fs::read_dir(&self.dir)?.flatten().filter(|e| e.path().extension().is_some_and(|x| x == EXT)).count())
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(q: i64) -> QueryResult {
        QueryResult { run_id: "run".into(), query_id: q, response: format!("answer {q}"), ..Default::default() }
    }

    #[test]
    fn put_survives_reopen_and_remove_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let k1 = spool.put(&result(1)).unwrap();
        spool.put(&result(2)).unwrap();
        // Re-putting the same key replaces, never duplicates.
        spool.put(&result(2)).unwrap();
        fs::write(dir.path().join("half.tmp"), b"partial").unwrap();

        let reopened = Spool::open(dir.path()).unwrap();
        let pending = reopened.pending().unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].1, result(1));
        assert!(!dir.path().join("half.tmp").exists());

        reopened.remove(&[k1]).unwrap();
        assert_eq!(reopened.len().unwrap(), 1);
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
        std::os::unix::fs::symlink("/dev/full", dir.path().join("run_1_0.tmp")).unwrap();
        let e = spool.put(&result(1)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
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
