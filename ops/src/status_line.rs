//! A live status line on a terminal's standard error, redrawn in place, that log lines
//! written through [`StderrWriter`] clear first so the two never share a line.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static SHOWN: AtomicBool = AtomicBool::new(false);

/// Whether standard error is a terminal (where a status line can be redrawn).
pub fn available() -> bool {
    std::io::stderr().is_terminal()
}

/// Draws `text` as the status line, replacing the previous one.
pub fn show(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{text}");
    let _ = err.flush();
    SHOWN.store(true, Ordering::Relaxed);
}

/// Removes the status line.
pub fn clear() {
    if SHOWN.swap(false, Ordering::Relaxed) {
        let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
    }
}

/// Standard error for log lines: clears the status line first (it is drawn again at its next
/// update).
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrWriter;

impl Write for StderrWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        clear();
        std::io::stderr().write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        clear();
        std::io::stderr().lock().write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrWriter {
    type Writer = StderrWriter;
    fn make_writer(&'a self) -> Self::Writer {
        StderrWriter
    }
}
