//! The `kurir-loadtest` binary: everything lives in the library (`kurir_loadtest::cli`).

fn main() -> std::process::ExitCode {
    kurir_loadtest::cli::run()
}
