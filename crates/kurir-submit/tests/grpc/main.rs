//! gRPC API tests against a real server over TCP with tonic clients: submission
//! (`submission`, both backends for the main flows), API keys and TLS (`auth`), health,
//! reflection and the drain (`health`). `harness` starts the server and reads the queue back.

mod admin;
mod auth;
mod harness;
mod health;
mod submission;
mod suppression;
