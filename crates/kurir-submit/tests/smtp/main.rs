//! SMTP submission server tests: protocol on in-memory streams (`session`, `security`),
//! real clients over TCP (`clients`), load (`load`) and the drain (`drain`).

mod clients;
mod drain;
mod harness;
mod load;
mod security;
mod session;
mod tls;
