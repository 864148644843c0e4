//! The load generator and the sink against each other, the gRPC sender against a real
//! `GrpcServer`, and the scenario files. One test binary, one module per subject.

mod cli;
mod common;
mod faults;
mod grpc;
mod scenarios;
mod sink;
