//! Where the coordinator keeps its files when not told otherwise.

use std::path::PathBuf;

/// The default `--data-dir`: `/var/lib/ipw-fleet` for root (a service), else
/// `$XDG_DATA_HOME/ipw-fleet` or `~/.local/share/ipw-fleet`.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/ipw-fleet");
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("ipw-fleet");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/ipw-fleet")
}

/// The data directory to use: `given`, or the default, made absolute against the working
/// directory now, since the embedded PostgreSQL's tools run from elsewhere and a relative
/// path would not find it at the next start.
pub fn data_dir(given: Option<PathBuf>) -> std::io::Result<PathBuf> {
    std::path::absolute(given.unwrap_or_else(default_data_dir))
}

/// The file holding the admin token that the coordinator generated in `data_dir`.
pub fn admin_token_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("admin-token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_data_dir_is_made_absolute() {
        let d = data_dir(Some(PathBuf::from("coord"))).unwrap();
        assert!(d.is_absolute());
        assert_eq!(d, std::env::current_dir().unwrap().join("coord"));
        assert_eq!(data_dir(Some(PathBuf::from("/srv/ipw"))).unwrap(), PathBuf::from("/srv/ipw"));
    }
}
