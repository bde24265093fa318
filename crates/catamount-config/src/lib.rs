//! Catamount's configuration model, independent of Ruby and of I/O.
//!
//! - [`cli`]: Puma-compatible command-line flags.
//! - [`bind`]: bind URLs (`tcp://`, `unix://`).
//! - [`options`]: every option, defined once (methods, flags, fields, default, doc, example),
//!   and the layering (CLI over config file over defaults) that turns a command line and a
//!   config file into the [`Options`] the server runs with.
//! - [`doc`]: the options table of docs/configuration.md, made from the definitions.
//!
//! The Ruby config DSL records each call and hands it to [`Layer::set`], so one function
//! validates an option whether it came from a flag or from `config/puma.rb`.

pub mod bind;
pub mod cli;
pub mod doc;
pub mod options;
pub mod tls;

pub use bind::{BindKind, BindUrl};
pub use options::{resolve, Environment, ForceShutdown, Layer, Options, Value};
