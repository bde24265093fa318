//! What the reactor, its connections and `Server` share while a server runs:
//! the configuration, the queue, the stop flag, the activity clock, the kept body buffers,
//! the counters and the count of TLS relays.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::Notify;

use crate::body_buffers::BodyBuffers;
use crate::config::ServerConfig;
use crate::hand_over::HandedOver;
use crate::metrics::Metrics;
use crate::request::WorkQueue;
use crate::response::{Exchange, Responder, Responding};
use crate::stream::Stream;

/// State shared by the reactor, every connection and every responder.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) queue: Arc<WorkQueue>,
    /// Set once a graceful stop began: no new connections, no more keep-alive.
    pub(crate) stopping: Arc<AtomicBool>,
    /// When the graceful stop began (the drain time runs from there).
    pub(crate) stop_began: OnceLock<Instant>,
    /// The drain was cut short (`Server::end_drain`): its deadline is the stop itself.
    pub(crate) drain_ended: AtomicBool,
    /// The responses cut at the end of the drain time, described for the log (Ruby's drain
    /// logs them, so the lines get the process's prefix and formatter).
    pub(crate) cut_at_drain: Mutex<Vec<String>>,
    /// When the server started; `last_activity` counts milliseconds from here.
    pub(crate) started: Instant,
    /// The last accepted connection or received request (for `idle_timeout`).
    pub(crate) last_activity: AtomicU64,
    /// Buffers for bodies read into memory, back from the pool threads for the next body.
    pub(crate) body_buffers: Arc<BodyBuffers>,
    /// Response bytes handed to the reactor and not written yet, over every connection.
    pub(crate) handed_over: Arc<HandedOver>,
    /// Stats and metrics counters (owned by the embedder, so they outlive this server).
    pub(crate) metrics: Arc<Metrics>,
    /// What every responder reads (shared, so a responder carries one pointer to it).
    pub(crate) responding: Arc<Responding>,
    /// The TLS connections apps took, relayed by the reactor.
    pub(crate) relays: Relays,
}

/// The relays of TLS connections apps took (`reactor/relay.rs`) running for one server: its
/// reactor waits for them as it ends.
#[derive(Debug, Default)]
pub(crate) struct Relays {
    running: AtomicUsize,
    ended: Notify,
}

impl Relays {
    pub(crate) fn started(&self) {
        self.running.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn ended(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.ended.notify_waiters();
    }

    /// Resolves once no relay runs.
    pub(crate) async fn all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the check, so an end between the two is not missed.
            ended.as_mut().enable();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            ended.await;
        }
    }
}

impl Shared {
    /// Notes that a connection was accepted or a request arrived.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.store(ms, Ordering::Relaxed);
    }

    /// When responses still being written are cut (`drain_timeout` after the stop began);
    /// None while the server is not stopping.
    pub(crate) fn drain_deadline(&self) -> Option<Instant> {
        let began = *self.stop_began.get()?;
        if self.drain_ended.load(Ordering::SeqCst) {
            return Some(began);
        }
        Some(began + self.config.drain_timeout)
    }

    /// The responder for a request of this server's, on `stream`.
    pub(crate) fn responder(
        &self,
        stream: Arc<Stream>,
        exchange: Arc<Exchange>,
        keep_alive_wanted: bool,
        read_at: Instant,
    ) -> Responder {
        let server = self.responding.clone();
        Responder::new(stream, server, exchange, keep_alive_wanted, read_at)
    }
}
