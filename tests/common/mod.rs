#![allow(dead_code)]
pub mod daemon;
pub mod group;
pub mod s3;
pub mod vm;
pub mod xfs;
