//! The optional per-host cap (`WF_HOST_CONCURRENCY`): politeness towards a
//! receiving host that serves many webhooks, never isolation (that is per
//! webhook). Its slots are shared fairly: no webhook may hold more than its
//! share of them, so one that hangs with its slots taken cannot starve its
//! siblings on the same host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

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

    /// A slot for webhook `id`, once its fair share has room: the job waits
    /// in hand, at the head of its webhook's backlog, holding nothing any
    /// other webhook needs.
    pub(super) async fn acquire(self: &Arc<Self>, id: &str) -> HostPermit {
        if self.try_take(id) {
            return self.permit(id);
        }
        *self.lock().waiting.entry(id.to_string()).or_default() += 1;
        // Counted as waiting while it waits, also if the wait is dropped.
        let _waiting = Waiting { host: self, id };
        self.wait_for_share(id).await;
        self.permit(id)
    }

    async fn wait_for_share(&self, id: &str) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release in between wakes us.
            freed.as_mut().enable();
            if self.try_take(id) {
                return;
            }
            freed.await;
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

/// A webhook's place among a host's waiters, given up when dropped.
struct Waiting<'a> {
    host: &'a Host,
    id: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        decrement(&mut self.host.lock().waiting, self.id);
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
    use std::time::Duration;

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
        let hog = [host.acquire("hang").await, host.acquire("hang").await];
        let third = tokio::time::timeout(Duration::from_millis(200), host.acquire("hang")).await;
        assert!(third.is_err(), "past its share: it waits");
        assert!(
            host.lock().waiting.is_empty(),
            "a dropped wait is forgotten"
        );
        let sibling = tokio::time::timeout(Duration::from_millis(200), host.acquire("ok")).await;
        assert!(sibling.is_ok(), "the sibling's share is free");
        drop((hog, sibling));
        assert_eq!(host.lock().total, 0);
        assert!(host.lock().held.is_empty());
    }

    #[tokio::test]
    async fn a_freed_slot_wakes_a_waiter() {
        let host = Arc::new(Host::new(2));
        let a = host.acquire("a").await;
        let b = host.acquire("b").await;
        let waiter = tokio::spawn({
            let host = host.clone();
            async move { drop(host.acquire("c").await) }
        });
        tokio::task::yield_now().await;
        drop(a);
        let woken = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(woken.is_ok(), "woken by the release");
        drop(b);
    }

    proptest::proptest! {
        /// Webhooks taking a host's slots as long as `fair` lets them: the
        /// host never goes over its limit, none takes more than its share
        /// (and one alone at most half), and the slots left idle are only
        /// the remainder of dividing the limit among them.
        #[test]
        fn slots_are_shared_without_excess_or_idle_room(
            limit in 1usize..200,
            webhooks in 1usize..40,
            order in proptest::collection::vec(0usize..40, 0..400),
        ) {
            let mut held = vec![0usize; webhooks];
            let mut total = 0;
            // Asks in an arbitrary order, then round-robin until no one can take.
            let asks = order.into_iter().map(|i| i % webhooks).chain((0..limit + 1).flat_map(|_| 0..webhooks));
            for w in asks {
                if fair(limit, total, held[w], webhooks) {
                    held[w] += 1;
                    total += 1;
                }
            }
            let share = (limit / webhooks.max(2)).max(1);
            proptest::prop_assert!(total <= limit);
            proptest::prop_assert!(held.iter().all(|&h| h <= share));
            if webhooks == 1 {
                proptest::prop_assert!(held[0] <= (limit / 2).max(1));
            }
            proptest::prop_assert_eq!(total, limit.min(webhooks * share));
        }
    }
}
