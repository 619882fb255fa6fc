//! `gatehouse`: see `gatehouse --help` and the README.

/// mimalloc instead of glibc malloc: fewer cycles per allocation on the request
/// path, and memory of closed connections goes back to the system
/// (benches/results has the before/after figures).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gatehouse::logging::init();
    gatehouse::cli::main()
}
