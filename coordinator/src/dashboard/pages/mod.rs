//! The dashboard's pages, one file each: thin handlers that read through `store/` and
//! render with [`super::layout`].

pub mod compare;
pub mod fleet;
pub mod home;
pub mod leaderboard;
pub mod run;
pub mod runs;
