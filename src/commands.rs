//! The subcommands, each returning its exit code. Errors go to stderr, one line per cause.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::daemon;

/// Prints an error chain as one lowercase line per cause.
fn report(err: &anyhow::Error) {
    for cause in err.chain() {
        eprintln!("error: {cause}");
    }
}

fn load(path: &Path) -> Result<Config, u8> {
    config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        2
    })
}

/// `frontsync run`.
pub fn run(path: &Path) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let shutdown = CancellationToken::new();
    if let Err(e) = crate::signals::install(shutdown.clone()) {
        eprintln!("error: cannot install signal handlers: {e}");
        return 1;
    }
    let result = runtime.block_on(daemon::run(config, shutdown, |_| {}));
    match result {
        Ok(()) => 0,
        Err(daemon::RunError::Config(msg)) => {
            for line in msg.lines() {
                eprintln!("error: {line}");
            }
            2
        }
        Err(daemon::RunError::Failure(e)) => {
            report(&e);
            1
        }
    }
}

/// `frontsync check`.
pub fn check(path: &Path, online: bool) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let secret_errors = config.check_secrets();
    for e in &secret_errors {
        eprintln!("{}: {e}", path.display());
    }
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    if !secret_errors.is_empty() {
        return 2;
    }
    for line in config.summary() {
        println!("{line}");
    }
    if online {
        eprintln!(
            "error: --online checks need the front api client, which this build does not include yet"
        );
        return 1;
    }
    0
}

/// `frontsync status`.
pub fn status(path: &Path, raw_json: bool) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let url = format!("http://{}/status", config.admin.listen);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let fetched = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()?;
        client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json::<serde_json::Value>()
            .await
    });
    let doc = match fetched {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: the daemon is not reachable at {url}: {e}");
            return 1;
        }
    };
    if raw_json {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", render_status(&doc));
    }
    0
}

/// The `/status` document as a readable table.
pub fn render_status(doc: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let dash = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let _ = writeln!(
        out,
        "{:<24} {:>12} {:>8} {:<22} LAST ERROR",
        "SUBSCRIPTION", "CURSOR", "LAG S", "LAST POLL"
    );
    if let Some(subs) = doc["subscriptions"].as_object() {
        for (name, s) in subs {
            let _ = writeln!(
                out,
                "{:<24} {:>12} {:>8} {:<22} {}",
                name,
                dash(&s["cursor"]),
                dash(&s["lag_seconds"]),
                dash(&s["last_poll_at"]),
                dash(&s["last_error"])
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<24} {:>8} {:>8} {:>10} LAST ERROR",
        "SINK", "OUTBOX", "DEAD", "DELIVERED"
    );
    if let Some(sinks) = doc["sinks"].as_object() {
        for (name, s) in sinks {
            let _ = writeln!(
                out,
                "{:<24} {:>8} {:>8} {:>10} {}",
                name,
                dash(&s["outbox_depth"]),
                dash(&s["dead_letters"]),
                dash(&s["delivered_total"]),
                dash(&s["last_error"])
            );
        }
    }
    out
}
