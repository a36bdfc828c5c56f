//! Command-line definitions (clap). No behaviour here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;

/// Keeps Front conversations flowing into NEXT AI as Highlights, and into any tool that
/// reads JSON lines.
#[derive(Debug, Parser)]
#[command(name = "frontsync", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "FRONTSYNC_CONFIG",
        default_value = "/etc/frontsync/config.toml",
        value_name = "PATH"
    )]
    pub config: PathBuf,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`).
    #[arg(
        long,
        global = true,
        env = "FRONTSYNC_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground until SIGTERM or SIGINT.
    Run,
    /// Validate the configuration; print one line per subscription.
    Check {
        /// Also call Front (/me, /inboxes) and each sink's health check.
        #[arg(long)]
        online: bool,
    },
    /// Ask the running daemon for cursors, lag, outbox depth and errors.
    Status {
        /// Print the raw JSON document.
        #[arg(long)]
        json: bool,
    },
    /// List the inboxes a connection's token can see (id, name, private?).
    Inboxes {
        /// The connection: the NAME of a [front.NAME] table.
        #[arg(long, value_name = "NAME")]
        front: String,
    },
    /// Show each sink's outbox depth and dead letters; retry or drop dead letters.
    ///
    /// Works with the daemon running (through its admin listener) or stopped (on the state
    /// file).
    Outbox {
        #[command(subcommand)]
        action: Option<OutboxAction>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
        /// Dead letters listed per sink.
        #[arg(long, default_value_t = 100, value_name = "N")]
        limit: usize,
    },
    /// Print the Highlight the daemon would emit for a conversation; writes nothing.
    Preview {
        /// The subscription whose rules (labels, id prefix) apply.
        #[arg(long, value_name = "NAME")]
        subscription: String,
        /// The conversation id (cnv_...).
        #[arg(value_name = "CNV_ID")]
        conversation: String,
    },
    /// Authorize frontsync for an OAuth connection and store the grant in the state database.
    ///
    /// Prints Front's authorize URL, then waits for the browser's redirect on the loopback
    /// address of the connection's redirect_uri. While the daemon runs, the grant is handed
    /// to it through its admin listener.
    Auth {
        #[command(subcommand)]
        target: AuthTarget,
    },
    /// Print a shell completion script on stdout (bash, zsh, fish, elvish, powershell).
    ///
    /// bash: `frontsync completions bash > /etc/bash_completion.d/frontsync`;
    /// zsh: `frontsync completions zsh > "${fpath[1]}/_frontsync"`;
    /// fish: `frontsync completions fish > ~/.config/fish/completions/frontsync.fish`.
    /// The Debian package installs all three.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum, value_name = "SHELL")]
        shell: crate::completions::Shell,
    },
    /// Print the man page frontsync(1) on stdout, or write every page into a folder.
    #[command(hide = true)]
    Man {
        /// Write frontsync.1 and one frontsync-COMMAND.1 per subcommand into this folder.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// `frontsync auth front`.
#[derive(Debug, Subcommand)]
pub enum AuthTarget {
    /// A Front connection with `auth = { oauth = ... }`.
    Front {
        /// The connection: the NAME of a [front.NAME] table.
        #[arg(value_name = "NAME")]
        name: String,
        /// The code from the address Front redirected to (or that whole address): for a
        /// headless server, where the browser runs elsewhere. No listener runs and the
        /// state parameter is not checked.
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
        /// How long to wait for the redirect.
        #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// `frontsync outbox retry|drop`.
#[derive(Debug, Subcommand)]
pub enum OutboxAction {
    /// Requeue dead letters: each goes to the END of the sink's outbox with a new seq, so it
    /// is delivered after everything already queued (possibly after a later revision of the
    /// same Highlight).
    Retry {
        /// The sink: the NAME of a [sinks.NAME] table.
        sink: String,
        /// Every dead letter of the sink.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Dead letter IDs, as `frontsync outbox` lists them.
        #[arg(value_name = "ID", required_unless_present = "all")]
        ids: Vec<u64>,
    },
    /// Delete dead letters for good.
    Drop {
        /// The sink: the NAME of a [sinks.NAME] table.
        sink: String,
        /// Every dead letter of the sink.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Dead letter IDs, as `frontsync outbox` lists them.
        #[arg(value_name = "ID", required_unless_present = "all")]
        ids: Vec<u64>,
    },
}
