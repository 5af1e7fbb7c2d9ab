#![allow(dead_code)]
pub mod group;
pub mod xfs;
