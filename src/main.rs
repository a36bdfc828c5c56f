//! The `frontsync` binary: parse the command line, load the config, set up logs, run, and
//! map the outcome to an exit code (0 ok, 1 runtime failure, 2 bad config).

use std::process::ExitCode;

use clap::Parser;
use frontsync::cli::{Cli, Command};
use frontsync::{commands, completions, logging};

/// mimalloc instead of glibc's malloc: under load glibc's allocator took about a quarter
/// of the daemon's CPU (several threads allocating and freeing request buffers, JSON and
/// redb pages; see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, &cli.log_level);
    let code = match cli.command {
        Command::Run => commands::run(&cli.config),
        Command::Check { online } => commands::check(&cli.config, online),
        Command::Status { json } => commands::status(&cli.config, json),
        Command::Inboxes { front } => commands::inboxes(&cli.config, &front),
        Command::Outbox {
            action,
            json,
            limit,
        } => commands::outbox(&cli.config, action, json, limit),
        Command::Preview {
            subscription,
            conversation,
        } => commands::preview(&cli.config, &subscription, &conversation),
        Command::Auth { target } => commands::auth(&cli.config, target),
        Command::Completions { shell } => completions::print_completions(shell),
        Command::Man { out_dir } => completions::write_man(out_dir.as_deref()),
    };
    ExitCode::from(code)
}
