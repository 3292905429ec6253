//! The backend API (`/api/v1/*`, API key): what a chat backend calls to
//! mint tokens and publish events, and the feed it reads or has pushed.

pub mod feed;
pub mod notices;
pub mod publish;
pub mod social;
pub mod tokens;
pub mod users;
pub mod webhook;
