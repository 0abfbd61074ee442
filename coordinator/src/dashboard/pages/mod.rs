//! The dashboard's pages, one file each: thin handlers that read through `store/` and
//! render with [`super::layout`].

pub mod home;
