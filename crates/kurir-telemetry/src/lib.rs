//! Being written: tracing, metrics, HTTP endpoint.
