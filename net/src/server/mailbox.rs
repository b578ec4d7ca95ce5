//! Bounded queues between cores.
//!
//! Each core has one inbox, a bounded lock-free queue that every other core pushes to. A push
//! into a full inbox never blocks the sending core: the message waits in the sender's
//! per-destination backlog, in order, until the inbox has room. A backlog has a bound too;
//! past it, frames for connections on the lagging core are dropped and those connections are
//! closed with 1013 (try again later) instead, so a client never silently misses an op and
//! no core waits on another (two cores waiting on each other's full inbox would deadlock).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

use crate::protocol::close;
use crate::session::ConnId;
use crate::shard::CoreMsg;

/// A core's inbox.
pub(crate) struct Mailbox {
    queue: ArrayQueue<CoreMsg>,
    waker: AtomicWaker,
    /// Wake-ups requested from outside the cores (shutdown).
    pub(crate) pokes: AtomicUsize,
}

impl Mailbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { queue: ArrayQueue::new(capacity.max(1)), waker: AtomicWaker::new(), pokes: AtomicUsize::new(0) }
    }

    /// Pushes a message and wakes the owner core; gives the message back when full.
    pub(crate) fn push(&self, msg: CoreMsg) -> Result<(), CoreMsg> {
        self.queue.push(msg)?;
        self.waker.wake();
        Ok(())
    }

    pub(crate) fn pop(&self) -> Option<CoreMsg> {
        self.queue.pop()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Wakes the owner core without a message (it then checks for shutdown).
    pub(crate) fn poke(&self) {
        self.pokes.fetch_add(1, Ordering::Release);
        self.waker.wake();
    }

    /// Waits until there is a message or a poke.
    pub(crate) async fn ready(&self, pokes_seen: usize) {
        poll_fn(|cx| {
            if !self.queue.is_empty() || self.pokes.load(Ordering::Acquire) != pokes_seen {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // A push between the check and the registration would otherwise be missed.
            if !self.queue.is_empty() || self.pokes.load(Ordering::Acquire) != pokes_seen {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// What a core holds back for one destination whose inbox was full.
#[derive(Default)]
pub(crate) struct Backlog {
    queue: VecDeque<CoreMsg>,
    /// Connections on the destination whose frames were dropped: they must be closed.
    kick: Vec<ConnId>,
}

impl Backlog {
    pub(crate) fn len(&self) -> usize {
        self.queue.len() + usize::from(!self.kick.is_empty())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.kick.is_empty()
    }

    /// Sends `msg` to `inbox`, or holds it back in order. Past `limit` held messages,
    /// frames are dropped and their connections marked for closing; requests from this
    /// core's connections are always kept (their readers pause while the backlog is long).
    pub(crate) fn send(&mut self, inbox: &Mailbox, msg: CoreMsg, limit: usize) {
        if self.is_empty() {
            match inbox.push(msg) {
                Ok(()) => return,
                Err(msg) => self.queue.push_back(msg),
            }
            return;
        }
        if self.queue.len() >= limit {
            match msg {
                CoreMsg::Deliver { conns, except, .. } => {
                    self.kick.extend(conns.iter().copied().filter(|c| Some(*c) != except));
                    self.kick.sort_unstable();
                    self.kick.dedup();
                    return;
                }
                CoreMsg::DeliverOne { conn, .. } => {
                    if !self.kick.contains(&conn) {
                        self.kick.push(conn);
                    }
                    return;
                }
                msg => self.queue.push_back(msg),
            }
            return;
        }
        self.queue.push_back(msg);
    }

    /// Moves held messages into `inbox` while it has room, kicks first. True when empty.
    pub(crate) fn flush(&mut self, inbox: &Mailbox) -> bool {
        if !self.kick.is_empty() {
            let conns = std::mem::take(&mut self.kick);
            if let Err(CoreMsg::Kick { conns, .. }) = inbox.push(CoreMsg::Kick { conns, code: close::TRY_AGAIN_LATER })
            {
                self.kick = conns;
                return false;
            }
        }
        while let Some(msg) = self.queue.pop_front() {
            if let Err(msg) = inbox.push(msg) {
                self.queue.push_front(msg);
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn deliver(conn: u64) -> CoreMsg {
        CoreMsg::DeliverOne { conn: ConnId { core: 1, seq: conn }, frame: bytes::Bytes::new() }
    }

    #[test]
    fn backlog_keeps_order_and_kicks_past_its_limit() {
        let inbox = Mailbox::new(2);
        let mut b = Backlog::default();
        for i in 0..6 {
            b.send(&inbox, deliver(i), 2);
        }
        // 2 in the inbox, 2 held, 2 dropped and kicked.
        assert_eq!((inbox.len(), b.queue.len(), b.kick.len()), (2, 2, 2));
        let conns: Arc<Vec<ConnId>> = Arc::new(vec![ConnId { core: 1, seq: 7 }, ConnId { core: 1, seq: 8 }]);
        b.send(
            &inbox,
            CoreMsg::Deliver { conns, except: Some(ConnId { core: 1, seq: 8 }), frame: bytes::Bytes::new() },
            2,
        );
        assert_eq!(b.kick.len(), 3);
        // Drain the inbox: the kick goes first, then the held messages in order.
        let seq = |m: CoreMsg| match m {
            CoreMsg::DeliverOne { conn, .. } => conn.seq,
            _ => 99,
        };
        assert_eq!((seq(inbox.pop().unwrap()), seq(inbox.pop().unwrap())), (0, 1));
        assert!(!b.flush(&inbox));
        assert!(matches!(inbox.pop(), Some(CoreMsg::Kick { conns, code: 1013 }) if conns.len() == 3));
        assert_eq!(seq(inbox.pop().unwrap()), 2);
        assert!(b.flush(&inbox));
        assert_eq!(seq(inbox.pop().unwrap()), 3);
        assert!(b.is_empty());
    }
}
