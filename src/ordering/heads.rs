//! The ordered jobs this process is sending now, so the next events of a key
//! can wait here for their predecessors (each at most [`LOCAL_WAIT`] for the
//! one in flight) instead of going round the hold tier. They wait in their
//! webhook's own backlog window, in nobody else's way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// The longest a job waits in process for the event before it, being sent
/// by this process.
const LOCAL_WAIT: Duration = Duration::from_secs(1);

/// Most jobs waiting in process at once (each holds a prefetch slot of its
/// webhook's backlog; the bound is on memory).
const MAX_LOCAL_WAITERS: usize = 4096;

/// How a wait for a key's job in flight ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waited {
    /// It finished: the key may have moved on, look again.
    Finished,
    /// This process is not sending one (it may have finished since the
    /// state was read: worth one more look, no more).
    NoneHere,
    /// Too many wait already, or it did not finish in time.
    GaveUp,
}

/// The ordered jobs this process is sending now, by (webhook, key), so the
/// next event of a key can wait for its predecessor here.
#[derive(Default)]
pub(super) struct Heads {
    sending: Mutex<HashMap<(String, String), Arc<Notify>>>,
    waiters: AtomicUsize,
}

/// A job of `Heads` being sent; dropped once it is finished (or handed on).
pub(crate) struct Sending<'a> {
    heads: &'a Heads,
    entry: (String, String),
    done: Arc<Notify>,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        let mut sending = self.heads.sending.lock().unwrap_or_else(|e| e.into_inner());
        if sending
            .get(&self.entry)
            .is_some_and(|n| Arc::ptr_eq(n, &self.done))
        {
            sending.remove(&self.entry);
        }
        drop(sending);
        self.done.notify_waiters();
    }
}

impl Heads {
    pub(super) fn start(&self, entry: (String, String)) -> Sending<'_> {
        let done = Arc::new(Notify::new());
        let mut sending = self.sending.lock().unwrap_or_else(|e| e.into_inner());
        sending.insert(entry.clone(), done.clone());
        Sending {
            heads: self,
            entry,
            done,
        }
    }

    /// Waits (at most [`LOCAL_WAIT`]) until the job of `entry` this process
    /// is sending is finished.
    pub(super) async fn wait(&self, entry: &(String, String)) -> Waited {
        let done = {
            let sending = self.sending.lock().unwrap_or_else(|e| e.into_inner());
            match sending.get(entry) {
                Some(n) => n.clone(),
                None => return Waited::NoneHere,
            }
        };
        if self.waiters.fetch_add(1, AtomicOrdering::Relaxed) >= MAX_LOCAL_WAITERS {
            self.waiters.fetch_sub(1, AtomicOrdering::Relaxed);
            return Waited::GaveUp;
        }
        let notified = done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Finished between the lookup and now: no notification will come.
        let still = {
            let sending = self.sending.lock().unwrap_or_else(|e| e.into_inner());
            sending.get(entry).is_some_and(|n| Arc::ptr_eq(n, &done))
        };
        let finished = !still || tokio::time::timeout(LOCAL_WAIT, notified).await.is_ok();
        self.waiters.fetch_sub(1, AtomicOrdering::Relaxed);
        match finished {
            true => Waited::Finished,
            false => Waited::GaveUp,
        }
    }
}
