//! Distributed consistency groups (grids): see docs/grid.md.
pub mod bookmark;
mod conn;
pub mod counter;
mod objects;
pub mod restore;
mod secret;
pub mod server;
mod setup;
pub mod stream;
mod wire;

pub use secret::GridSecret;
pub use setup::Grid;
