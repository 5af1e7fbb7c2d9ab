#![allow(dead_code)]
pub mod azurite;
pub mod config;
pub mod conformance;
pub mod daemon;
pub mod grid;
pub mod group;
pub mod host;
pub mod logwrites;
pub mod loopdev;
pub mod mount;
pub mod nbd;
pub mod netns;
pub mod powercut;
pub mod s3;
pub mod split;
pub mod vm;
pub mod xfs;
