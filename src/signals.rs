//! Signals, one meaning each (signal-hook on a dedicated thread): SIGTERM/SIGINT start a
//! graceful shutdown, a second one exits at once (the state database is crash-safe, and
//! the next start resumes from the last commit); SIGHUP asks for a reload.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::daemon::Control;

/// Starts the signal thread.
pub fn install(
    shutdown: CancellationToken,
    control: UnboundedSender<Control>,
) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("frontsync-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                match sig {
                    SIGHUP => {
                        tracing::info!("SIGHUP received: reloading the configuration");
                        if control.send(Control::Reload).is_err() {
                            tracing::warn!("reload ignored: the daemon is stopping");
                        }
                    }
                    _ if shutdown.is_cancelled() => {
                        tracing::warn!("second stop signal: exiting now; the next start resumes from the last commit");
                        std::process::exit(1);
                    }
                    _ => {
                        tracing::info!(signal = sig, "stop signal received");
                        shutdown.cancel();
                    }
                }
            }
        })?;
    Ok(())
}
