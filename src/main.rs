//! `gatehouse`: see `gatehouse --help` and the README.

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    gatehouse::cli::main()
}
