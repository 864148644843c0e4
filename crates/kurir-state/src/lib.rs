//! Suppression, bounce memory, the delivery ledger, idempotency keys, message tracking and
//! domain controls (`shared/DESIGN.md` §5).
//!
//! # Layout
//! Not built yet: the `State` trait and its Redis (`redis/`) and embedded (`embedded/`)
//! backends arrive with the state issue (#4).
