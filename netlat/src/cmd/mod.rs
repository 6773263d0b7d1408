//! The subcommands, one file each, and the dispatch from the parsed command line. Each
//! subcommand turns its clap arguments into its validated config once, here.

use std::{io::Write as _, process::ExitCode};

use anyhow::Context as _;
use clap::CommandFactory as _;

pub mod args;
pub mod doctor;
pub mod replay;
pub mod report;
pub mod watch;

use args::{Cli, Command};

/// Runs the parsed command line. A closed stdout is the caller's to treat as success (see
/// `main`), so subcommands just return their write errors.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Watch(a) => {
            let cfg: watch::WatchConfig = a.into();
            if cfg.tui {
                crate::tui::main(&cfg)
            } else {
                watch::main(&cfg)
            }
        }
        Command::Doctor(a) => doctor::main(&a),
        Command::Replay(a) => replay::main(&a.into()),
        Command::Report(a) => report::main(&a),
        Command::Completions { shell } => {
            // Generated in memory: clap_complete panics on a write error (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "netlat", &mut script);
            let mut out = std::io::stdout().lock();
            out.write_all(&script)
                .and_then(|()| out.flush())
                .context("writing the completion script")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .context("writing the manual page")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Whether `verbose` diagnostics were asked for (only `watch` has them).
pub fn verbose(cli: &Cli) -> bool {
    matches!(&cli.command, Command::Watch(w) if w.verbose)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated documents come from the same definitions as `--help`.
    #[test]
    fn man_page_and_completions_cover_every_subcommand() {
        let mut man = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut man)
            .unwrap();
        let man = String::from_utf8(man).unwrap();
        assert!(man.starts_with(".ie"), "{}", &man[..40]);
        let mut bash = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "netlat",
            &mut bash,
        );
        let bash = String::from_utf8(bash).unwrap();
        for sub in ["watch", "doctor", "replay", "report", "completions", "man"] {
            assert!(man.contains(sub), "man page lacks {sub}");
            assert!(bash.contains(sub), "bash completion lacks {sub}");
        }
        assert!(bash.contains("--threshold"));
    }
}
