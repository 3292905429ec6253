//! The HTTP toolkit of the edge: the error mapping, replies, request
//! parsing, authentication, CORS, static files, and the socket wrapper
//! the server and the WebSocket sessions share. It calls nothing above
//! it; the routing that uses it is [`crate::routes`].

pub mod auth;
pub mod cors;
mod error;
pub mod reply;
pub mod request;
pub mod rewind;
pub mod static_files;
