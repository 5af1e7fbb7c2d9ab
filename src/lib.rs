//! cascade turns consistent snapshots of a group of volumes into one change journal
//! that many replicas read. The library holds everything; `src/cli` only parses
//! arguments and calls in here, so every behaviour is reachable from tests.
//!
//! Modules sit in layers and use only their own layer or lower ones (docs/layers.md;
//! `tests/layers.rs` checks it): 1 leaf utilities, 2 formats and maths with the config
//! schema beside them, 3 volume drivers, 4 what moves journal data, 5 the daemon.
#![deny(unsafe_code)]

// 1: leaf utilities
pub mod clock;
pub mod command;
pub mod error;
pub mod fsutil;
pub mod listen;
mod lock;
pub mod progress;
pub mod secret;
pub mod sys;

// 2: formats and maths; the schema
pub mod config;
pub mod diff;
pub mod journal;
pub mod nbd;
pub mod replica;

// 3: volume drivers, the splitter
pub mod splitter;
pub mod volume;

// 4: what moves journal data
pub mod cycle;
pub mod export;
pub mod grid;
pub mod replay;
pub mod restore;

// 5: the daemon
pub mod schedule;

pub use error::{Error, Result};
