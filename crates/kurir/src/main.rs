//! The `kurir` binary: everything lives in the library (`kurir::cli`), so integration
//! tests exercise the same code.

fn main() -> std::process::ExitCode {
    kurir::cli::run()
}
