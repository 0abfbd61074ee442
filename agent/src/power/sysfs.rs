//! Reading the kernel's one-value files (sysfs): RAPL zones, GPU hwmon, Jetson rails.

use std::path::Path;
use std::str::FromStr;

/// A file's text without its trailing newline.
pub fn read_trimmed(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned())
}

/// A file holding one number; a file that holds something else is `InvalidData`, naming it.
pub fn read_number<T: FromStr>(path: &Path) -> std::io::Result<T>
where
    T::Err: std::fmt::Display,
{
    read_trimmed(path)?
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
}
