//! How the nodes of a cluster ask each other about a user: a question on
//! the nodes' bus ([`NodeBus`]), answered by every other running node on
//! the same bus, collected until all answered or the timeout ran out.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use crate::error::Error;
use crate::store::NodeBus;
use crate::uid::Uid;
use crate::util::SharedMap;

/// Another node's question: about `uid`, or (`seq`) about its event.
pub struct Question {
    id: u64,
    from: String,
    pub uid: Uid,
    pub seq: Option<u64>,
    /// The event's message id, for its read receipt.
    pub message: Option<u64>,
}

/// A question to the other nodes, or an answer to one.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Message {
    Ask {
        ask: u64,
        from: String,
        uid: Uid,
        /// Absent: the user; present: the trace of this event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<u64>,
    },
    Reply {
        reply: u64,
        to: String,
        node: String,
        answer: Value,
    },
}

/// Asks the other nodes and routes their answers back to the asker.
pub struct Peers {
    bus: Arc<dyn NodeBus>,
    node: String,
    timeout: Duration,
    next: AtomicU64,
    waiting: SharedMap<u64, mpsc::UnboundedSender<(String, Value)>>,
}

/// Removes a question's entry from the waiting ones when dropped.
struct Forget<'a>(
    &'a SharedMap<u64, mpsc::UnboundedSender<(String, Value)>>,
    u64,
);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// Which nodes answered a question.
#[derive(Debug, Default, Serialize)]
pub struct Answered {
    /// Every node that was asked, this one included (empty: one process).
    pub nodes: Vec<String>,
    /// The nodes that did not answer in time.
    pub missing: Vec<String>,
}

impl Peers {
    pub fn new(bus: Arc<dyn NodeBus>, node: String, timeout: Duration) -> Arc<Peers> {
        Arc::new(Peers {
            bus,
            node,
            timeout,
            next: AtomicU64::new(1),
            waiting: SharedMap::default(),
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Asks every other running node about `uid` (`seq`: its event), and
    /// returns their answers with the nodes asked and those that did not
    /// answer within the timeout.
    pub async fn ask(
        &self,
        uid: &Uid,
        seq: Option<u64>,
        message: Option<u64>,
    ) -> Result<(Vec<(String, Value)>, Answered), Error> {
        let nodes = self.bus.nodes().await?;
        let mut others: BTreeSet<String> =
            nodes.iter().filter(|n| **n != self.node).cloned().collect();
        let mut answers = Vec::new();
        if !others.is_empty() {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            let (tx, mut rx) = mpsc::unbounded_channel();
            self.waiting.insert(id, tx);
            // Forgotten however this ends, a caller gone away included.
            let _waiting = Forget(&self.waiting, id);
            let question = Message::Ask {
                ask: id,
                from: self.node.clone(),
                uid: uid.clone(),
                seq,
                message,
            };
            let asked = self
                .bus
                .tell(&serde_json::to_vec(&question).unwrap_or_default())
                .await;
            if asked.is_ok() {
                let deadline = tokio::time::Instant::now() + self.timeout;
                while !others.is_empty() {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some((node, answer))) => {
                            if others.remove(&node) {
                                answers.push((node, answer));
                            }
                        }
                        _ => break,
                    }
                }
            }
            asked?;
        }
        let mut all = nodes;
        if !all.contains(&self.node) && !all.is_empty() {
            all.push(self.node.clone());
        }
        all.sort();
        Ok((
            answers,
            Answered {
                nodes: all,
                missing: others.into_iter().collect(),
            },
        ))
    }

    /// Keeps this node in the list of running nodes, renewing its lease
    /// every third of `lease`; never returns.
    pub async fn keep_alive(&self, lease: Duration) {
        loop {
            if let Err(e) = self.bus.alive(&self.node, lease).await {
                tracing::debug!("could not renew this node's lease: {e}");
            }
            tokio::time::sleep(lease / 3).await;
        }
    }

    /// The next question another node asks, handing the answers to this
    /// node's questions to their askers on the way; `None` once the bus is
    /// gone (a store of one process has none).
    pub async fn next_question(&self, told: &mut broadcast::Receiver<Bytes>) -> Option<Question> {
        loop {
            let message = match told.recv().await {
                Ok(message) => message,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            match serde_json::from_slice::<Message>(&message) {
                Ok(Message::Ask {
                    ask,
                    from,
                    uid,
                    seq,
                    message,
                }) if from != self.node => {
                    return Some(Question {
                        id: ask,
                        from,
                        uid,
                        seq,
                        message,
                    })
                }
                Ok(Message::Reply {
                    reply,
                    to,
                    node,
                    answer,
                }) if to == self.node => {
                    if let Some(waiting) = self.waiting.get(&reply) {
                        let _ = waiting.send((node, answer));
                    }
                }
                _ => {}
            }
        }
    }

    /// Answers `question` with `answer`.
    pub async fn reply(&self, question: Question, answer: Value) {
        let reply = Message::Reply {
            reply: question.id,
            to: question.from,
            node: self.node.clone(),
            answer,
        };
        let reply = serde_json::to_vec(&reply).unwrap_or_default();
        if let Err(e) = self.bus.tell(&reply).await {
            tracing::debug!("could not answer another node: {e}");
        }
    }

    /// What other nodes publish.
    pub fn told(&self) -> broadcast::Receiver<Bytes> {
        self.bus.told()
    }
}
