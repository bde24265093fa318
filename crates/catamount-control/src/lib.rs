//! Catamount's control server, without Ruby and without threads.
//!
//! The control server lives in the process that carries out its commands: the server process in
//! single mode, the cluster master otherwise. The master is single-threaded and forks, so nothing
//! here starts a thread or blocks: [`ControlServer`] owns an epoll instance (through `mio`) whose
//! descriptor the caller's own loop waits on, and [`ControlServer::poll`] does what is ready and
//! returns the authorized commands; the caller answers each with [`ControlServer::answer`].
//!
//! Modules, read top-down:
//! - [`command`]: the command table and the routing rules (last path segment, token, allowed).
//! - [`auth`]: the token check (query split, constant-time compare) and token generation.
//! - [`answer`]: the bytes of an answer.
//! - [`listen`]: control URLs (`auto`, `tcp://`, `ssl://`, `unix://`, `unix://@abstract`) and
//!   binding.
//! - [`server`]: [`ControlServer`]: accept, read, parse, deadlines, answers, flush, close.
//! - `tls`: a connection's rustls session over the non-blocking socket (`ssl://`).
//! - [`metrics`]: Prometheus text exposition (format 0.0.4) from a typed [`metrics::Snapshot`].
//! - [`memory`]: a process's RSS and PSS from `/proc`.

pub mod answer;
pub mod auth;
pub mod command;
pub mod listen;
pub mod memory;
pub mod metrics;
pub mod server;
mod tls;

pub use listen::ControlError;
pub use server::{ControlServer, Settings};
