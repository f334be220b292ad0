//! The designs we compare against, kept out of `src/`: a mutex future, two
//! mutex pools, and the floor (the smallest correct crossbeam-deque pool).
#![allow(dead_code)]

pub mod floor_pool;
pub mod mutex_future;
pub mod mutex_pool;
