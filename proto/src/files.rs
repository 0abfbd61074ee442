//! Files that hold secrets (credentials, keys, the admin token), written so that a crash or a
//! power cut leaves either the old file or the new one, never a torn or missing one.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `contents` to `path`, mode 0600, atomically: a temporary file beside it is written
/// and fsynced, renamed over `path`, and the directory is fsynced so that the rename itself
/// survives a power cut. A temporary file a crash left behind is replaced, never reused with
/// its old mode. Errors name the file.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display()));
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().ok_or_else(|| named(std::io::ErrorKind::InvalidInput.into()))?.to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(named(e)),
        _ => {}
    }
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(named)?;
    f.set_permissions(Permissions::from_mode(0o600)).map_err(named)?;
    f.write_all(contents).map_err(named)?;
    f.sync_all().map_err(named)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(named)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leftover_temporary_file_is_replaced_and_the_mode_is_0600() {
        let dir = std::env::temp_dir().join(format!("ipw-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        // A crash left a world-readable temporary file with stale content.
        std::fs::write(dir.join("secret.tmp"), "stale").unwrap();
        std::fs::set_permissions(dir.join("secret.tmp"), Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!dir.join("secret.tmp").exists());
        // Writing again replaces the content whole.
        write_private(&path, b"newer").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "newer");
        let e = write_private(&dir.join("missing").join("x"), b"x").unwrap_err();
        assert!(e.to_string().contains("missing/x"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
