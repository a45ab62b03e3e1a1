//! Numbers the events of ordered webhooks in the order of `{ns}.ingest`,
//! while their fan-outs run concurrently.
//!
//! Every message of the ingest channel holds a turn, its delivery tag
//! (tags count 1, 2, 3… per channel, in delivery order). A fan-out hands in
//! its turn with what it needs numbered (often nothing); the sequencer
//! numbers the turns strictly in tag order, the contiguous ones ready at a
//! moment in one Redis call, so an event is never numbered before one
//! received earlier. A turn dropped unused counts as nothing to number.
//! While Redis is down the numbering waits and retries: events of ordered
//! webhooks wait in order; the others go on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::keys::{Assign, Sequences};
use crate::clock;

/// What one event needs numbered: (webhook id, ordering key) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// The event's application.
    pub app: String,
    /// The event.
    pub event_id: String,
    /// (webhook id, key) for each ordered webhook receiving it.
    pub pairs: Vec<(String, String)>,
}

/// The numbers of one event, in the order of its `pairs`.
type Numbers = Vec<u64>;

struct Hand {
    tag: u64,
    wanted: Option<Wanted>,
    reply: Option<oneshot::Sender<Numbers>>,
}

/// The sequencer of one ingest channel; its task ends with the last handle.
#[derive(Clone)]
pub(crate) struct Sequencer {
    hands: mpsc::UnboundedSender<Hand>,
}

/// One message's turn; dropped unused, it counts as nothing to number.
pub(crate) struct Turn {
    tag: u64,
    hands: Option<mpsc::UnboundedSender<Hand>>,
}

impl Sequencer {
    /// Starts the sequencer of a fresh channel (first tag 1).
    pub(super) fn start(sequences: Arc<Sequences>) -> Sequencer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(sequences, rx));
        Sequencer { hands: tx }
    }

    /// The turn of the message with delivery tag `tag`.
    pub(crate) fn turn(&self, tag: u64) -> Turn {
        Turn {
            tag,
            hands: Some(self.hands.clone()),
        }
    }
}

impl Turn {
    /// Numbers `wanted` once every earlier message had its turn; none if
    /// the sequencer is gone (the channel is closing).
    pub(crate) async fn number(mut self, wanted: Wanted) -> Option<Numbers> {
        let hands = self.hands.take()?;
        if wanted.pairs.is_empty() {
            let _ = hands.send(Hand {
                tag: self.tag,
                wanted: None,
                reply: None,
            });
            return Some(Vec::new());
        }
        let (tx, rx) = oneshot::channel();
        hands
            .send(Hand {
                tag: self.tag,
                wanted: Some(wanted),
                reply: Some(tx),
            })
            .ok()?;
        rx.await.ok()
    }

    /// Waits until every earlier message had its turn and what they wanted
    /// is numbered; false if the sequencer is gone.
    pub(crate) async fn passed(mut self) -> bool {
        let Some(hands) = self.hands.take() else {
            return false;
        };
        let (tx, rx) = oneshot::channel();
        let sent = hands.send(Hand {
            tag: self.tag,
            wanted: None,
            reply: Some(tx),
        });
        sent.is_ok() && rx.await.is_ok()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(hands) = self.hands.take() {
            let _ = hands.send(Hand {
                tag: self.tag,
                wanted: None,
                reply: None,
            });
        }
    }
}

/// The longest pause between two tries while Redis is down.
const MAX_PAUSE: Duration = Duration::from_secs(2);

async fn run(sequences: Arc<Sequences>, mut hands: mpsc::UnboundedReceiver<Hand>) {
    let mut next = 1u64;
    let mut waiting: BTreeMap<u64, Hand> = BTreeMap::new();
    let mut received = Vec::new();
    while hands.recv_many(&mut received, 512).await > 0 {
        for hand in received.drain(..) {
            waiting.insert(hand.tag, hand);
        }
        // Every contiguous turn from `next` on: nothing to number, or into
        // one batch.
        let mut batch = Vec::new();
        let mut passed = Vec::new();
        while let Some(hand) = waiting.remove(&next) {
            next += 1;
            if hand.wanted.is_none() {
                // Waiting for its turn to pass: told once the batch is numbered.
                passed.extend(hand.reply);
            } else {
                batch.push(hand);
            }
        }
        if !batch.is_empty() {
            number(&sequences, batch).await;
        }
        for reply in passed {
            let _ = reply.send(Vec::new());
        }
    }
}

/// Numbers `batch` in one call, trying until Redis answers (or every
/// fan-out waiting for it was abandoned).
async fn number(sequences: &Sequences, batch: Vec<Hand>) {
    let assigns: Vec<Assign<'_>> = batch
        .iter()
        .flat_map(|h| {
            let w = h.wanted.as_ref().expect("only hands with work are batched");
            w.pairs.iter().map(|(webhook, key)| Assign {
                app: &w.app,
                webhook,
                key,
                event_id: &w.event_id,
            })
        })
        .collect();
    let mut pause = Duration::from_millis(100);
    let numbers = loop {
        match sequences.assign(&assigns, clock::unix_millis()).await {
            Ok(numbers) => break numbers,
            Err(e) => {
                if batch
                    .iter()
                    .all(|h| h.reply.as_ref().is_none_or(|r| r.is_closed()))
                {
                    return;
                }
                tracing::warn!(error = %crate::logging::Chain(&e), "cannot number ordered events; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    };
    let mut numbers = numbers.into_iter();
    for hand in batch {
        let n = hand.wanted.as_ref().map_or(0, |w| w.pairs.len());
        let mine: Numbers = numbers.by_ref().take(n).collect();
        if let Some(reply) = hand.reply {
            let _ = reply.send(mine);
        }
    }
}
