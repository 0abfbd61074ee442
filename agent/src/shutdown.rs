//! Graceful shutdown: SIGTERM (`systemctl stop`) or SIGINT (Ctrl-C) asks the agent to stop
//! taking work, finish or abandon what is in flight within a grace period, upload what it
//! measured, give its leases back and stop its managed engine. A second signal exits at once.

use std::sync::Arc;
use tokio::sync::watch;

/// A request to stop, shared by everything that should notice it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (tx, rx) = watch::channel(false);
        Self { tx: Arc::new(tx), rx }
    }
}

impl Shutdown {
    /// Asks everything holding a clone to stop.
    pub fn request(&self) {
        let _ = self.tx.send(true);
    }

    /// Whether a stop was asked for.
    pub fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once a stop is asked for.
    pub async fn requested(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Sleeps for `d`, or less if a stop is asked for meanwhile.
    pub async fn sleep(&self, d: std::time::Duration) {
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = self.requested() => {}
        }
    }

    /// Requests a stop on the first SIGTERM or SIGINT, and exits the process at the second.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let this = self.clone();
        tokio::spawn(async move {
            for n in 0.. {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                if n > 0 {
                    tracing::warn!("second signal: exiting now; measured results stay in the spool");
                    std::process::exit(130);
                }
                tracing::info!("stopping: no new work; finishing the queries in flight, then giving the leases back");
                this.request();
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_request_wakes_every_clone_and_cuts_sleeps_short() {
        let s = Shutdown::default();
        let other = s.clone();
        assert!(!other.is_requested());
        let waiter = tokio::spawn(async move { other.sleep(Duration::from_secs(60)).await });
        s.request();
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("woken").unwrap();
        assert!(s.is_requested());
    }
}
