//! Smoke tests: each test kit component used by a real client, so that a component that
//! ignored its input would fail here.

mod dns;
mod kafka;
mod redis;
mod smtp_sink;
