//! The `kurir` binary: everything lives in the library (`kurir::cli`), so integration
//! tests exercise the same code.

/// mimalloc instead of glibc's malloc: a relay allocates and frees per command, record and
/// write, and glibc's allocator took 10-15 % of its CPU (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kurir::cli::run()
}
