//! The optional per-host cap (`WF_HOST_CONCURRENCY`): politeness towards a
//! receiving host that serves many webhooks, never isolation (that is per
//! webhook). Its slots are shared fairly: no webhook may hold more than its
//! share of them, so one that hangs with its slots taken cannot starve its
//! siblings on the same host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How long a job waits for a fair host slot before it is deferred.
const HOST_WAIT: Duration = Duration::from_secs(1);

/// One host's shared slots.
pub(super) struct Host {
    limit: usize,
    state: Mutex<HostState>,
    freed: Notify,
}

#[derive(Default)]
struct HostState {
    total: usize,
    // Slots held and jobs waiting, per webhook id (entries removed at zero).
    held: HashMap<String, usize>,
    waiting: HashMap<String, usize>,
}

impl HostState {
    /// Webhooks holding or waiting for slots, counting `id`.
    fn active(&self, id: &str) -> usize {
        let others = self
            .held
            .keys()
            .chain(self.waiting.keys().filter(|k| !self.held.contains_key(*k)))
            .filter(|k| k.as_str() != id)
            .count();
        others + 1
    }
}

/// A held host slot; dropping it frees the slot and wakes the waiters.
pub(super) struct HostPermit {
    host: Arc<Host>,
    id: String,
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        let mut s = self.host.lock();
        s.total -= 1;
        decrement(&mut s.held, &self.id);
        drop(s);
        self.host.freed.notify_waiters();
    }
}

impl Host {
    /// A host allowing `limit` requests at once.
    pub(super) fn new(limit: usize) -> Host {
        Host {
            limit,
            state: Mutex::new(HostState::default()),
            freed: Notify::new(),
        }
    }

    /// A slot for webhook `id`, waiting up to `HOST_WAIT` for its fair share;
    /// `None` means the caller defers the job.
    pub(super) async fn acquire(self: &Arc<Self>, id: &str) -> Option<HostPermit> {
        if self.try_take(id) {
            return Some(self.permit(id));
        }
        *self.lock().waiting.entry(id.to_string()).or_default() += 1;
        let got = self.wait_for_share(id).await;
        decrement(&mut self.lock().waiting, id);
        got.then(|| self.permit(id))
    }

    async fn wait_for_share(&self, id: &str) -> bool {
        let deadline = Instant::now() + HOST_WAIT;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release in between wakes us.
            freed.as_mut().enable();
            if self.try_take(id) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, freed).await.is_err() {
                return self.try_take(id);
            }
        }
    }

    fn try_take(&self, id: &str) -> bool {
        let mut s = self.lock();
        let held = s.held.get(id).copied().unwrap_or(0);
        if !fair(self.limit, s.total, held, s.active(id)) {
            return false;
        }
        s.total += 1;
        *s.held.entry(id.to_string()).or_default() += 1;
        true
    }

    fn permit(self: &Arc<Self>, id: &str) -> HostPermit {
        HostPermit {
            host: self.clone(),
            id: id.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HostState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn decrement(map: &mut HashMap<String, usize>, id: &str) {
    if let Some(n) = map.get_mut(id) {
        *n -= 1;
        if *n == 0 {
            map.remove(id);
        }
    }
}

/// Whether a webhook holding `held` of a host's `limit` slots (`total` taken,
/// `active` webhooks using or wanting the host, itself included) may take one
/// more: the host has one free and the webhook stays within its share, the
/// limit divided among the active webhooks, and never more than half of it
/// while alone, so a sibling that shows up later always finds room.
pub(super) fn fair(limit: usize, total: usize, held: usize, active: usize) -> bool {
    let share = (limit / active.max(2)).max(1);
    total < limit && held < share
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_never_takes_more_than_its_share() {
        // Alone on a host of 16: up to 8, leaving room for a sibling.
        assert!(fair(16, 7, 7, 1));
        assert!(!fair(16, 8, 8, 1));
        // Four active on 16: 4 each.
        assert!(fair(16, 10, 3, 4));
        assert!(!fair(16, 10, 4, 4));
        // A full host admits no one.
        assert!(!fair(16, 16, 0, 4));
        // More webhooks than slots: one each, first come.
        assert!(fair(4, 3, 0, 10));
        assert!(!fair(4, 3, 1, 10));
    }

    #[tokio::test]
    async fn a_sibling_gets_a_slot_while_a_hanging_webhook_holds_its_share() {
        let host = Arc::new(Host::new(4));
        let hog: Vec<_> = [host.acquire("hang").await, host.acquire("hang").await]
            .into_iter()
            .map(|p| p.expect("within its share"))
            .collect();
        let at = Instant::now();
        assert!(
            host.acquire("hang").await.is_none(),
            "past its share: deferred"
        );
        assert!(at.elapsed() >= HOST_WAIT);
        let sibling = host.acquire("ok").await;
        assert!(sibling.is_some(), "the sibling's share is free");
        drop((hog, sibling));
        assert_eq!(host.lock().total, 0);
        assert!(host.lock().held.is_empty());
    }

    #[tokio::test]
    async fn a_freed_slot_wakes_a_waiter() {
        let host = Arc::new(Host::new(2));
        let a = host.acquire("a").await.expect("a slot");
        let b = host.acquire("b").await.expect("a slot");
        let waiter = tokio::spawn({
            let host = host.clone();
            async move { host.acquire("c").await.is_some() }
        });
        tokio::task::yield_now().await;
        drop(a);
        assert!(waiter.await.unwrap(), "woken by the release");
        drop(b);
    }
}
