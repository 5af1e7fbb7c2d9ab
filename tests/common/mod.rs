#![allow(dead_code)]
pub mod xfs;
