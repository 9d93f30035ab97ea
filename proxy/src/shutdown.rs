//! Graceful drain. On SIGTERM the listeners stop accepting and every connection is told to
//! finish: HTTP connections complete their in-flight requests and close, TCP connections run
//! on. At `--shutdown-timeout` whatever is still open is cut, each connection writing its own
//! access-log entry as it goes.

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// Finish what is in flight, take nothing new.
    Draining,
    /// Close now.
    Cut,
}

pub struct Shutdown {
    phase: watch::Sender<Phase>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            phase: watch::Sender::new(Phase::Running),
        }
    }
}

impl Shutdown {
    pub fn drain(&self) {
        self.advance(Phase::Draining);
    }

    pub fn cut(&self) {
        self.advance(Phase::Cut);
    }

    fn advance(&self, to: Phase) {
        self.phase.send_if_modified(|p| {
            let later = to > *p;
            if later {
                *p = to;
            }
            later
        });
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn watch(&self) -> ShutdownWatch {
        ShutdownWatch(self.phase.subscribe())
    }
}

/// A connection's view of the shutdown.
pub struct ShutdownWatch(watch::Receiver<Phase>);

impl ShutdownWatch {
    /// Resolves once the process is at least at `phase`.
    pub async fn reached(&mut self, phase: Phase) {
        // The sender lives as long as the state; if it went, everything is going.
        let _ = self.0.wait_for(|p| *p >= phase).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward() {
        let s = Shutdown::default();
        let mut w = s.watch();
        s.drain();
        w.reached(Phase::Draining).await;
        s.cut();
        s.drain();
        w.reached(Phase::Cut).await;
        assert_eq!(*s.phase.borrow(), Phase::Cut);
    }
}
