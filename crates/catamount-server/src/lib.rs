//! Catamount's server core, with no Ruby in it.
//!
//! - [`listener`]: opening the sockets named by bind URLs.
//! - `reactor`: the thread that owns every connection: accepts, buffers whole requests, finishes
//!   responses, keeps idle keep-alive connections, relays the TLS connections apps took.
//! - [`dispatch`]: the queue between the reactor and the Ruby thread pool, and the pool's books.
//! - [`request`] / [`response`]: what a pool thread gets (a whole [`Request`]) and answers with
//!   (a [`Responder`] that writes without ever blocking the thread on a slow client).
//! - [`body_buffers`]: request-body buffers kept for reuse between the reactor and the pool.
//! - `hand_over`: the bounds and counts of response bytes pool threads hand to the reactor;
//!   `deferred_wakes`: the reactor's wake-ups for them that wait for its next turn.
//! - [`metrics`]: the counters behind stats and metrics (responses, histograms, bytes, connections).
//! - `overdue`: `request_timeout` on the connection's side (who answers a request, its app or
//!   the server at the deadline).
//! - `server`: [`Server`], starting and stopping the reactor; `shared`: what the reactor and its
//!   connections share.
//! - `stream` / `tls_stream`: a client connection (TCP, UNIX, or TLS: a rustls session the
//!   reactor reads, which pool threads write responses into directly).
//!
//! The Ruby extension drives this from pool threads: [`WorkQueue::pop`] a [`Job`], run the app,
//! write through its [`Responder`].
//!
//! The modules' dependencies run one way: `tls_stream` on none; `dispatch`, `stream` (on
//! `tls_stream`), `body_buffers`, `deferred_wakes`, `hand_over` (on `deferred_wakes`),
//! `log`, `metrics`, `spill` and `listener` depend on no other module (`access_log` on `log`); `config` ([`ServerConfig`]) on
//! `dispatch`; `response` on `dispatch`, `deferred_wakes`, `hand_over` and `stream`; `request` on `response` (and
//! `dispatch`, `body_buffers`); `shared` on `request`, `response`, `config`, `hand_over`,
//! `body_buffers` and `stream`; `reactor` on `shared` (and the modules below it); `server` on
//! `reactor`. `overdue` and `response` use each other (one connection's record, split by concern).
//! This file only declares them and re-exports.

#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod access_log;
pub mod body_buffers;
mod config;
mod deferred_wakes;
pub mod dispatch;
mod hand_over;
pub mod listener;
pub mod log;
pub mod metrics;
mod overdue;
mod reactor;
pub mod request;
pub mod response;
mod server;
mod shared;
mod spill;
mod stream;
#[cfg(feature = "test-hooks")]
mod test_hooks;
mod tls_stream;

pub use body_buffers::BodyBuffer;
pub use catamount_http::Limits;
pub use config::ServerConfig;
pub use dispatch::{Doorbell, Handoff, Idling, PoolAction, PoolStats, Seat, SeatId, Wait, Waiter};
pub use hand_over::PIECE as HAND_OVER_PIECE;
pub use listener::{
    bind_all, bind_all_inheriting, BoundListener, InheritedSocket, ListenError, Listener,
};
pub use metrics::{Metrics, Snapshot as MetricsSnapshot};
pub use overdue::{Expired, Overdue};
pub use request::{Body, Job, Peer, Pop, Request, WorkQueue};
pub use response::{Hijacked, Responder, StillServing, WriteRoute};
pub use server::{set_fatal_exit, Server, REACTOR_PANIC_EXIT};
