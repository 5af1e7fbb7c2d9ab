//! cascade turns consistent snapshots of a group of volumes into one change journal
//! that many replicas read. The library holds everything; `src/cli` only parses
//! arguments and calls in here, so every behaviour is reachable from tests.
#![deny(unsafe_code)]

pub mod command;
pub mod config;
pub mod cycle;
pub mod diff;
pub mod error;
pub mod export;
pub mod journal;
mod lock;
pub mod progress;
pub mod replay;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod sys;
pub mod volume;

pub use error::{Error, Result};
