//! The netlat binary: parse flags, run a subcommand, turn any error into one line.

use std::process::ExitCode;

use clap::Parser as _;
use netlat::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line is the error itself; the rest is usage text.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "netlat: {} (see `netlat --help`)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let verbose = match &cli.command {
        Command::Watch(w) => w.verbose,
        Command::Doctor(_) | Command::Replay(_) | Command::Report(_) => false,
    };
    init_logging(verbose);
    let result = match cli.command {
        Command::Watch(args) => netlat::watch::main(args),
        Command::Doctor(args) => netlat::doctor::main(args),
        Command::Replay(args) => netlat::replay::main(args),
        Command::Report(args) => netlat::export::report::main(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netlat: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: bool) {
    let filter = if verbose { "debug" } else { "warn" };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETLAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .try_init();
}
