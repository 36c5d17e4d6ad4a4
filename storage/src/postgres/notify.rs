//! Telling the other nodes what changed: `NOTIFY` in the writing transaction, `LISTEN` on one
//! connection per node.
//!
//! PostgreSQL delivers a notification when its transaction commits, never for a rolled-back
//! one, and folds identical notifications of one transaction into one, so a batch of a
//! thousand messages to one destination wakes each listener once. A payload is
//! `{"node": …, "kind": "work" | "destination" | "subject", "arg": …}`; a node ignores its own.
//!
//! Notifications are hints, not the record: a node that missed some (its listening
//! connection dropped) gets [`Change::Resync`] on reconnecting, and every node still scans its
//! queues on a timer, so a lost notification delays work by at most one tick.

use std::borrow::Cow;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio_postgres::AsyncMessage;

use super::Shared;
use crate::Change;
use crate::error::Result;

/// The one channel herald uses.
const CHANNEL: &str = "herald";

#[derive(Serialize, Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    node: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    arg: Cow<'a, str>,
}

fn encode(node: &str, change: &Change) -> Option<String> {
    let (kind, arg) = match change {
        Change::Work => ("work", ""),
        Change::Destination(name) => ("destination", name.as_str()),
        Change::Subject(recipient) => ("subject", recipient.as_str()),
        Change::Resync => return None, // local only
    };
    serde_json::to_string(&Payload {
        node: node.into(),
        kind: kind.into(),
        arg: arg.into(),
    })
    .ok()
}

/// What `payload` tells this node `me`: nothing if it sent it, or if it does not parse.
fn decode(me: &str, payload: &str) -> Option<Change> {
    let payload: Payload<'_> = serde_json::from_str(payload).ok()?;
    if payload.node == me {
        return None;
    }
    match payload.kind.as_ref() {
        "work" => Some(Change::Work),
        "destination" => Some(Change::Destination(payload.arg.into_owned())),
        "subject" => Some(Change::Subject(payload.arg.into_owned())),
        _ => None,
    }
}

/// Queues `change` for the other nodes; sent when `tx` commits.
pub(super) async fn send(
    tx: &deadpool_postgres::Transaction<'_>,
    node: &str,
    change: &Change,
) -> Result<()> {
    if let Some(payload) = encode(node, change) {
        let statement = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
        tx.execute(&statement, &[&CHANNEL, &payload]).await?;
    }
    Ok(())
}

/// [`send`] for many changes, in one statement: a bulk of 10 000 suppressions names up to
/// 10 000 recipients, one round trip rather than 10 000.
pub(super) async fn send_all(
    tx: &deadpool_postgres::Transaction<'_>,
    node: &str,
    changes: &[Change],
) -> Result<()> {
    let payloads: Vec<String> = changes.iter().filter_map(|c| encode(node, c)).collect();
    if payloads.is_empty() {
        return Ok(());
    }
    let statement = tx
        .prepare_cached("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
        .await?;
    tx.execute(&statement, &[&CHANNEL, &payloads]).await?;
    Ok(())
}

/// Listens for the other nodes' changes until the store closes or is dropped, reconnecting
/// after a failure (then every subscriber gets [`Change::Resync`]). Holds the store only
/// weakly, so a dropped store stops its listener. The receiver hears once the first `LISTEN`
/// is in place: from then on no change committed by another node goes unheard.
pub(super) fn spawn_listener(shared: &Shared) -> tokio::sync::oneshot::Receiver<()> {
    let (listening, ready) = tokio::sync::oneshot::channel();
    let listener = Listener {
        store: std::sync::Arc::downgrade(&shared.inner),
        config: shared.inner.config.clone(),
        node: shared.inner.node.clone(),
        changes: shared.inner.changes.clone(),
    };
    tokio::spawn(async move {
        let mut listening = Some(listening);
        while listener.store_open() {
            match listener.listen(&mut listening).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "the PostgreSQL listener lost its connection"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    ready
}

struct Listener {
    store: std::sync::Weak<super::Inner>,
    config: tokio_postgres::Config,
    node: String,
    changes: tokio::sync::broadcast::Sender<Change>,
}

impl Listener {
    fn store_open(&self) -> bool {
        self.store
            .upgrade()
            .is_some_and(|inner| !inner.closed.load(std::sync::atomic::Ordering::Acquire))
    }

    /// One listening connection's life. `Ok` when the store closed. `listening` is told when
    /// the first connection listens; a later one tells the subscribers what they may have
    /// missed meanwhile.
    async fn listen(&self, listening: &mut Option<tokio::sync::oneshot::Sender<()>>) -> Result<()> {
        let (client, mut connection) = self.config.connect(tokio_postgres::NoTls).await?;
        let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
        // The connection must be polled for `LISTEN` to be answered, so it runs in its own
        // task, handing on what it hears.
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if sender.send(n.payload().to_owned()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        match listening.take() {
            Some(listening) => {
                let _ = listening.send(());
            }
            None => {
                let _ = self.changes.send(Change::Resync);
            }
        }
        let mut check = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                payload = received.recv() => match payload {
                    Some(payload) => {
                        if let Some(change) = decode(&self.node, &payload) {
                            // No subscriber yet is fine: nobody holds a copy to refresh.
                            let _ = self.changes.send(change);
                        }
                    }
                    None => break,
                },
                _ = check.tick() => {
                    if !self.store_open() {
                        driver.abort();
                        return Ok(());
                    }
                }
            }
        }
        match driver.await {
            Ok(Err(e)) => Err(e.into()),
            _ => Err(crate::StorageError::Unavailable(
                "the listening connection closed".into(),
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_node_hears_the_others_and_never_itself() {
        let sent = encode("node-a", &Change::Destination("orders".into())).unwrap();
        assert_eq!(decode("node-a", &sent), None);
        assert_eq!(
            decode("node-b", &sent),
            Some(Change::Destination("orders".into()))
        );
        let work = encode("node-a", &Change::Work).unwrap();
        assert_eq!(decode("node-b", &work), Some(Change::Work));
        let subject = encode("a:b", &Change::Subject("\"x\"@example.com".into())).unwrap();
        assert_eq!(
            decode("a", &subject),
            Some(Change::Subject("\"x\"@example.com".into()))
        );
        assert_eq!(encode("node-a", &Change::Resync), None);
        assert_eq!(decode("node-b", "not json"), None);
        assert_eq!(decode("node-b", r#"{"node":"x","kind":"other"}"#), None);
    }
}
