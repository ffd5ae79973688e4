//! The queue every sender submits to (part of the sequencer; see `mod.rs`): bounded, so a
//! slow disk makes exactly the sending clients wait; the sequencer thread takes a batch at
//! a time.

use crossbeam_channel::{Receiver, Sender};

use crate::chat::commit::Submit;

/// Most messages in one transaction.
pub const MAX_BATCH: usize = 512;
/// Submissions waiting at most; past it, submitting threads wait (backpressure on exactly
/// the clients that are sending).
const QUEUE: usize = 8192;

pub enum Cmd {
    Submit(Submit),
    Stop,
}

/// The handle other threads submit through; the sequencer thread takes from `rx`.
pub struct Sequencer {
    tx: Sender<Cmd>,
    pub rx: Receiver<Cmd>,
}

impl Default for Sequencer {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        Sequencer { tx, rx }
    }
}

impl Sequencer {
    /// Queues a message for storing and broadcasting. Blocks while the queue is full.
    pub fn submit(&self, s: Submit) -> Result<(), String> {
        self.tx.send(Cmd::Submit(s)).map_err(|_| "the message store has stopped".to_string())
    }

    /// Asks the thread to exit after what is already queued.
    pub fn stop(&self) {
        let _ = self.tx.send(Cmd::Stop);
    }
}

/// Waits for a submission, then takes everything else already waiting (up to `MAX_BATCH`)
/// into `batch`. `None`: stop now; `Some(true)`: stop after this batch.
pub fn next_batch(rx: &Receiver<Cmd>, batch: &mut Vec<Submit>) -> Option<bool> {
    match rx.recv() {
        Ok(Cmd::Submit(s)) => batch.push(s),
        Ok(Cmd::Stop) | Err(_) => return None,
    }
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(Cmd::Submit(s)) => batch.push(s),
            Ok(Cmd::Stop) => return Some(true),
            Err(_) => break,
        }
    }
    Some(false)
}
