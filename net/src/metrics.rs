//! Per-core counters, published for `GET /metrics` (Prometheus text format 0.0.4).
//!
//! Each core writes only its own [`CoreStats`] (plain stores of relaxed atomics: no lock, no
//! contended cache line); `/metrics`, served by whichever core accepted the scrape, reads all.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::shard::ShardStats;

/// The I/O driver a core runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// io_uring.
    IoUring,
    /// epoll (the legacy driver).
    Epoll,
}

impl Driver {
    /// The driver's name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::IoUring => "io_uring",
            Self::Epoll => "epoll",
        }
    }
}

/// One core's published numbers.
#[derive(Debug, Default)]
pub struct CoreStats {
    /// 0 for io_uring, 1 for epoll.
    pub driver: AtomicU64,
    /// Open WebSocket connections.
    pub connections: AtomicU64,
    /// Documents in memory.
    pub documents: AtomicU64,
    /// Client messages handled.
    pub messages_in: AtomicU64,
    /// Ops applied.
    pub ops_in: AtomicU64,
    /// Op messages fanned out.
    pub ops_out: AtomicU64,
    /// Frames queued to connections.
    pub frames_out: AtomicU64,
    /// Presence messages fanned out.
    pub presence_out: AtomicU64,
    /// Error messages sent.
    pub errors: AtomicU64,
    /// Idle documents evicted from memory.
    pub evicted: AtomicU64,
    /// Documents dropped because this node stopped serving them (a cluster's lease moved).
    pub moved: AtomicU64,
    /// Appends a shared op log refused (the core dropped its documents and carried on).
    pub append_refusals: AtomicU64,
    /// Ops applied in the last second.
    pub ops_in_per_s: AtomicU64,
    /// Op messages fanned out in the last second.
    pub ops_out_per_s: AtomicU64,
    /// Messages sent to other cores.
    pub core_msgs_out: AtomicU64,
    /// Messages received from other cores.
    pub core_msgs_in: AtomicU64,
    /// Messages waiting in this core's inbox.
    pub inbox_depth: AtomicU64,
    /// Messages this core holds back because another core's inbox was full.
    pub backlog_depth: AtomicU64,
    /// Bytes queued to this core's connections, not yet written.
    pub send_queue_bytes: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections refused (over the connection limit, or a bad handshake).
    pub refused: AtomicU64,
    /// Connections closed for reading too slowly.
    pub slow_reader_closes: AtomicU64,
    /// Connections closed for exceeding the message rate.
    pub rate_limited_closes: AtomicU64,
    /// Op-log write batches made durable.
    pub oplog_batches: AtomicU64,
    /// Ops made durable.
    pub oplog_ops: AtomicU64,
    /// Effects (acks, broadcasts) waiting for the op log.
    pub held_effects: AtomicU64,
    /// 1 once the op log failed on this core.
    pub storage_failed: AtomicU64,
    /// send(2)/sendmsg(2) calls that wrote to a client socket (a write carries every frame
    /// queued by then: messages per write show how much fan-out batching there is).
    pub socket_writes: AtomicU64,
    /// read(2) calls that read bytes from a client socket.
    pub socket_reads: AtomicU64,
}

impl CoreStats {
    /// Publishes a shard's counters.
    pub fn publish(&self, s: &ShardStats, connections: usize, documents: usize) {
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.connections, connections as u64);
        set(&self.documents, documents as u64);
        set(&self.messages_in, s.messages_in);
        set(&self.ops_in, s.ops_in);
        set(&self.ops_out, s.ops_out);
        set(&self.frames_out, s.frames_out);
        set(&self.presence_out, s.presence_out);
        set(&self.errors, s.errors);
        set(&self.evicted, s.evicted);
        set(&self.moved, s.moved);
        set(&self.core_msgs_out, s.core_msgs_out);
        set(&self.core_msgs_in, s.core_msgs_in);
    }

    /// Adds one to a counter only this core writes.
    pub fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// Renders every core's numbers.
pub fn render(cores: &[std::sync::Arc<CoreStats>]) -> String {
    let mut out = String::new();
    let metric = |out: &mut String, name: &str, kind: &str, help: &str, get: &dyn Fn(&CoreStats) -> u64| {
        let _ = writeln!(out, "# HELP tandem_{name} {help}\n# TYPE tandem_{name} {kind}");
        for (i, c) in cores.iter().enumerate() {
            let _ = writeln!(out, "tandem_{name}{{core=\"{i}\"}} {}", get(c));
        }
    };
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP tandem_driver The I/O driver each core runs (1 for the one in use).\n# TYPE tandem_driver gauge"
    );
    for (i, c) in cores.iter().enumerate() {
        let uring = load(&c.driver) == 0;
        let _ = writeln!(out, "tandem_driver{{core=\"{i}\",driver=\"io_uring\"}} {}", u8::from(uring));
        let _ = writeln!(out, "tandem_driver{{core=\"{i}\",driver=\"epoll\"}} {}", u8::from(!uring));
    }
    metric(&mut out, "connections", "gauge", "Open WebSocket connections.", &|c| load(&c.connections));
    metric(&mut out, "documents_open", "gauge", "Documents in memory.", &|c| load(&c.documents));
    metric(&mut out, "messages_in_total", "counter", "Client messages handled.", &|c| load(&c.messages_in));
    metric(&mut out, "ops_in_total", "counter", "Ops applied.", &|c| load(&c.ops_in));
    metric(&mut out, "ops_out_total", "counter", "Op messages fanned out to subscribers.", &|c| load(&c.ops_out));
    metric(&mut out, "ops_in_per_second", "gauge", "Ops applied in the last second.", &|c| load(&c.ops_in_per_s));
    metric(&mut out, "ops_out_per_second", "gauge", "Op messages fanned out in the last second.", &|c| {
        load(&c.ops_out_per_s)
    });
    metric(&mut out, "frames_out_total", "counter", "Frames queued to connections (fan-out messages).", &|c| {
        load(&c.frames_out)
    });
    metric(&mut out, "presence_out_total", "counter", "Presence messages fanned out.", &|c| load(&c.presence_out));
    metric(&mut out, "socket_writes_total", "counter", "Writes (send calls) to client sockets.", &|c| {
        load(&c.socket_writes)
    });
    metric(&mut out, "socket_reads_total", "counter", "Reads from client sockets that returned bytes.", &|c| {
        load(&c.socket_reads)
    });
    metric(&mut out, "errors_total", "counter", "Error messages sent to clients.", &|c| load(&c.errors));
    metric(&mut out, "documents_evicted_total", "counter", "Idle documents evicted from memory.", &|c| {
        load(&c.evicted)
    });
    metric(
        &mut out,
        "documents_moved_total",
        "counter",
        "Documents dropped because another node serves them now (a cluster lease moved).",
        &|c| load(&c.moved),
    );
    metric(
        &mut out,
        "oplog_append_refusals_total",
        "counter",
        "Appends a shared op log refused (the core dropped its documents and carried on).",
        &|c| load(&c.append_refusals),
    );
    metric(&mut out, "core_messages_out_total", "counter", "Messages sent to other cores.", &|c| {
        load(&c.core_msgs_out)
    });
    metric(&mut out, "core_messages_in_total", "counter", "Messages received from other cores.", &|c| {
        load(&c.core_msgs_in)
    });
    metric(&mut out, "inbox_depth", "gauge", "Messages waiting in the core's inbox.", &|c| load(&c.inbox_depth));
    metric(&mut out, "backlog_depth", "gauge", "Messages held back for full inboxes of other cores.", &|c| {
        load(&c.backlog_depth)
    });
    metric(&mut out, "send_queue_bytes", "gauge", "Bytes queued to connections, not yet written.", &|c| {
        load(&c.send_queue_bytes)
    });
    metric(&mut out, "connections_accepted_total", "counter", "Connections accepted.", &|c| load(&c.accepted));
    metric(&mut out, "connections_refused_total", "counter", "Connections refused (limit, bad handshake).", &|c| {
        load(&c.refused)
    });
    metric(&mut out, "slow_reader_closes_total", "counter", "Connections closed for reading too slowly.", &|c| {
        load(&c.slow_reader_closes)
    });
    metric(
        &mut out,
        "rate_limited_closes_total",
        "counter",
        "Connections closed for exceeding the message rate.",
        &|c| load(&c.rate_limited_closes),
    );
    metric(
        &mut out,
        "oplog_batches_total",
        "counter",
        "Op-log write batches made durable (one fdatasync each).",
        &|c| load(&c.oplog_batches),
    );
    metric(&mut out, "oplog_ops_total", "counter", "Ops made durable in the op log.", &|c| load(&c.oplog_ops));
    metric(&mut out, "held_effects", "gauge", "Acks and broadcasts waiting for the op log.", &|c| {
        load(&c.held_effects)
    });
    metric(
        &mut out,
        "storage_failed",
        "gauge",
        "1 once the op log failed on this core (it then refuses writes).",
        &|c| load(&c.storage_failed),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn renders_every_core() {
        let a = Arc::new(CoreStats::default());
        let b = Arc::new(CoreStats::default());
        b.driver.store(1, Ordering::Relaxed);
        CoreStats::bump(&a.accepted);
        a.publish(&ShardStats { ops_in: 7, ..ShardStats::default() }, 3, 2);
        let text = render(&[a, b]);
        assert!(text.contains("tandem_ops_in_total{core=\"0\"} 7\n"));
        assert!(text.contains("tandem_connections{core=\"0\"} 3\n"));
        assert!(text.contains("tandem_connections_accepted_total{core=\"0\"} 1\n"));
        assert!(text.contains("tandem_driver{core=\"1\",driver=\"epoll\"} 1\n"));
        assert!(text.contains("# TYPE tandem_ops_in_total counter\n"));
    }
}
