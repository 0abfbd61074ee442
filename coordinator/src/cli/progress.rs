//! Progress of long CLI work: a bar on a terminal, and a plain line at every tenth otherwise
//! (a log or a pipe gets no escape codes).

use std::io::IsTerminal;

/// Progress towards a known total.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: String,
    total: u64,
    done: u64,
    next_tenth: u64,
    unit: &'static str,
}

impl Progress {
    /// Progress of `what` towards `total` bytes.
    pub fn bytes(what: &str, total: u64) -> Self {
        Self::new(what, total, "{msg} {bar:40} {bytes}/{total_bytes} · {bytes_per_sec} · ETA {eta}", "bytes")
    }

    /// Progress of `what` towards `total` rows.
    pub fn rows(what: &str, total: u64) -> Self {
        Self::new(what, total, "{msg} {bar:40} {human_pos}/{human_len} rows · {per_sec} · ETA {eta}", "rows")
    }

    fn new(what: &str, total: u64, template: &str, unit: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template"));
            bar.set_message(what.to_owned());
            bar
        });
        Self { bar, what: what.to_owned(), total, done: 0, next_tenth: 1, unit }
    }

    /// Counts `n` more.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.set_position(self.done),
            None => {
                while self.total > 0 && self.next_tenth <= 10 && self.done * 10 >= self.next_tenth * self.total {
                    eprintln!(
                        "{}: {}% ({} of {} {})",
                        self.what,
                        self.next_tenth * 10,
                        self.done,
                        self.total,
                        self.unit
                    );
                    self.next_tenth += 1;
                }
            }
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
