//! Placeholder: being written.
#[derive(Debug)]
pub struct TestCa;
