//! Shell completions and man pages, generated from the clap definitions in [`crate::cli`].
//!
//! `frontsync completions SHELL` prints a completion script (clap_complete) and the hidden
//! `frontsync man --out-dir DIR` writes the man pages (clap_mangen). The Debian package
//! ships copies committed under `packaging/completions/` and `packaging/man/`;
//! `tests/packaging.rs` compares them with what these functions produce, so they cannot go
//! stale (`FRONTSYNC_BLESS=1 cargo test --test packaging` rewrites them).

use std::io::{self, Write};
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Generator;
pub use clap_complete::Shell;

use crate::cli::Cli;

/// The binary name completions and man pages are written for.
pub const BIN_NAME: &str = "frontsync";

/// The command line as clap sees it, without the `help` subcommand (every command has
/// `--help`; a `help` entry would only add noise to completions and man pages).
pub fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The completion script for `shell`.
pub fn completion_script(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command(), BIN_NAME, &mut out);
    out
}

/// The name the shell's completion loader expects: `frontsync.bash`, `_frontsync`,
/// `frontsync.fish`, ... (the Debian package installs the bash one as `frontsync`).
pub fn completion_file_name(shell: Shell) -> String {
    shell.file_name(BIN_NAME)
}

/// Every man page, as (file name, roff text): `frontsync.1`, then `frontsync-SUB.1` for
/// each visible subcommand (nested ones as `frontsync-SUB-SUBSUB.1`), in a stable order.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let cmd = command();
    let mut pages = vec![("frontsync.1".to_string(), main_page(&cmd))];
    fn walk(parent: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) {
        for sub in parent.get_subcommands().filter(|s| !s.is_hide_set()) {
            let man = clap_mangen::Man::new(sub.clone())
                .source(format!("{BIN_NAME} {}", env!("CARGO_PKG_VERSION")));
            let mut text = Vec::new();
            man.render(&mut text).expect("writing to a Vec cannot fail");
            text.extend_from_slice(see_also(BIN_NAME).as_bytes());
            pages.push((man.get_filename(), text));
            walk(sub, pages);
        }
    }
    walk(&cmd, &mut pages);
    pages
}

/// `frontsync.1`: clap_mangen's sections plus what a sysadmin looks for in a daemon's page.
fn main_page(cmd: &clap::Command) -> Vec<u8> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    let render = |out: &mut Vec<u8>| -> io::Result<()> {
        man.render_title(out)?;
        man.render_name_section(out)?;
        man.render_synopsis_section(out)?;
        out.write_all(MAIN_PAGE_DESCRIPTION.as_bytes())?;
        man.render_options_section(out)?;
        man.render_subcommands_section(out)?;
        out.write_all(MAIN_PAGE_EXTRA.as_bytes())?;
        man.render_version_section(out)?;
        let subs: Vec<String> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| format!("\\fB{BIN_NAME}\\-{}\\fR(1)", s.get_name()))
            .collect();
        writeln!(out, ".SH \"SEE ALSO\"")?;
        writeln!(
            out,
            "{}, \\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBsystemd\\-creds\\fR(1), \\fBlogrotate\\fR(8)",
            subs.join(", ")
        )?;
        Ok(())
    };
    render(&mut out).expect("writing to a Vec cannot fail");
    out
}

fn see_also(bin: &str) -> String {
    format!(".SH \"SEE ALSO\"\n\\fB{bin}\\fR(1)\n")
}

/// The DESCRIPTION of `frontsync.1` (roff): what the daemon does, for a sysadmin.
const MAIN_PAGE_DESCRIPTION: &str = r#".SH DESCRIPTION
\fBfrontsync\fR keeps customer conversations from Front flowing into NEXT AI as
Highlights, and into any tool that reads JSON lines. \fBfrontsync run\fR receives Front's
webhooks (and polls its API), checks their signatures, records each event durably in an
embedded database and delivers one Highlight per conversation to each configured sink
(NEXT AI over HTTP, a JSONL file, stdout) exactly once per sink, across crashes and sink
outages. The other commands validate the configuration, query the running daemon and
print what it would emit.
.PP
Under systemd the service \fBfrontsync.service\fR runs \fBfrontsync check\fR before it
starts, then \fBfrontsync run \-\-config /etc/frontsync/config.toml\fR; see \fBFILES\fR.
"#;

/// Sections of `frontsync.1` that clap knows nothing about (roff).
const MAIN_PAGE_EXTRA: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success; for \fBrun\fR, a clean stop after SIGTERM or SIGINT.
.TP
\fB1\fR
A runtime failure, a failed remote check (\fBcheck \-\-online\fR), or the daemon is not
reachable (\fBstatus\fR).
.TP
\fB2\fR
The configuration is invalid or a secret it names cannot be read. systemd does not restart
the service after this code (\fBRestartPreventExitStatus=2\fR).
.SH ENVIRONMENT
.TP
\fBFRONTSYNC_CONFIG\fR
The configuration file when \fB\-\-config\fR is not given.
.TP
\fBFRONTSYNC_LOG\fR, \fBRUST_LOG\fR
The log filter when \fB\-\-log\-level\fR is not given.
.TP
\fBCREDENTIALS_DIRECTORY\fR
Set by systemd (\fBLoadCredential=\fR); secrets written as \fB{ credential = "name" }\fR
are read from \fI$CREDENTIALS_DIRECTORY/name\fR.
.SH FILES
.TP
\fI/etc/frontsync/config.toml\fR
The configuration (TOML). It holds no secrets and must be readable by the service's
transient user.
.TP
\fI/usr/lib/systemd/system/frontsync.service\fR
The hardened systemd unit; add \fBLoadCredential=\fR lines with \fBsystemctl edit frontsync\fR.
.TP
\fI/var/lib/frontsync/\fR
The state database (redb) and, in the packaged configuration, the JSONL archive.
.TP
\fI/etc/logrotate.d/frontsync\fR
Rotates the JSONL archive; the daemon reopens its files on SIGHUP.
.TP
\fI/usr/share/doc/frontsync/config.example.toml\fR
The complete, commented configuration reference.
.SH SIGNALS
SIGTERM and SIGINT stop the daemon gracefully (a second one exits at once); SIGHUP reloads
and reopens the JSONL files (\fBsystemctl reload frontsync\fR).
"#;

/// `frontsync completions SHELL`: prints the script on stdout.
pub fn print_completions(shell: Shell) -> u8 {
    match io::stdout().lock().write_all(&completion_script(shell)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: cannot write the completion script: {e}");
            1
        }
    }
}

/// `frontsync man`: prints `frontsync.1` on stdout, or writes every page into `out_dir`.
pub fn write_man(out_dir: Option<&Path>) -> u8 {
    let pages = man_pages();
    let result = match out_dir {
        None => io::stdout().lock().write_all(&pages[0].1),
        Some(dir) => pages.iter().try_for_each(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        }),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: cannot write the man pages: {e}");
            1
        }
    }
}
