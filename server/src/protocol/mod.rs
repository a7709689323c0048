//! The wire protocol: the request parser (`request`) and `Reply` with its encoder (`reply`).

pub mod reply;
pub mod request;
