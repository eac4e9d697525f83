//! The edge: bytes in, bytes out. The router and the application state
//! (`app`), GraphQL over HTTP and WebSocket (`ws`), and GraphiQL.

pub mod app;
pub mod graphiql;
pub mod state;
pub mod ws;
