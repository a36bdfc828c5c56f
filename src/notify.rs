//! systemd's readiness protocol (`sd_notify(3)`), written by hand on a std
//! [`UnixDatagram`] so the daemon needs no extra crate.
//!
//! Under `Type=notify` systemd passes a socket address in `$NOTIFY_SOCKET`; the daemon
//! sends newline-separated `KEY=VALUE` assignments to it as single datagrams:
//! `READY=1` once it serves, `RELOADING=1` … `READY=1` around a reload, `STOPPING=1` when
//! it starts to shut down, `WATCHDOG=1` keep-alives, and `STATUS=…` for `systemctl status`.
//! Outside systemd the variable is unset and every function here returns `Ok(false)`, so
//! callers never need to know how they were started.
//!
//! The variable is deliberately left in the environment (unlike
//! `sd_notify(unset_environment=1)`): the daemon notifies many times over its life.
//! Errors are returned rather than logged so the caller decides; a failed notification
//! should be logged at WARN and never stop the daemon.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` (one or more `KEY=VALUE` lines) as one datagram to `$NOTIFY_SOCKET`.
///
/// Returns `Ok(true)` when it was sent, `Ok(false)` when `$NOTIFY_SOCKET` is unset or
/// empty (not started by systemd with `Type=notify`), and an error when the address is
/// unusable or the send failed.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(addr) if !addr.is_empty() => send_to(&addr, state).map(|()| true),
        _ => Ok(false),
    }
}

/// `READY=1`, with an optional `STATUS=` line: startup is complete (state open,
/// listeners bound), or a reload finished.
pub fn ready(status: Option<&str>) -> io::Result<bool> {
    match status {
        Some(msg) => notify(&format!("READY=1\nSTATUS={}", one_line(msg))),
        None => notify("READY=1"),
    }
}

/// `RELOADING=1` with `MONOTONIC_USEC=`: a reload has begun; send [`ready`] when done.
///
/// systemd ≥ 253 (`Type=notify-reload`) uses the timestamp to tell this reload from an
/// older one and ignores `RELOADING=1` without it; older versions ignore the extra field.
/// On targets where the clock cannot be read without the libc crate (see
/// [`monotonic_usec`]) `RELOADING=1` is sent alone, which plain `Type=notify` accepts.
pub fn reloading() -> io::Result<bool> {
    notify(&reloading_message(monotonic_usec()))
}

/// `STOPPING=1`: shutdown has begun (sent once, on the first stop signal).
pub fn stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// `STATUS=…`: a one-line, human-readable state for `systemctl status`.
/// Newlines in `msg` become spaces, so a message cannot smuggle in other assignments.
pub fn status(msg: &str) -> io::Result<bool> {
    notify(&format!("STATUS={}", one_line(msg)))
}

/// `WATCHDOG=1`: a keep-alive; send it every [`watchdog_interval`].
pub fn watchdog() -> io::Result<bool> {
    notify("WATCHDOG=1")
}

/// How often to send [`watchdog`]: half of `$WATCHDOG_USEC` (the margin `sd_watchdog_enabled(3)`
/// recommends), or `None` when no watchdog is configured for this process (unset, zero or
/// unparsable `$WATCHDOG_USEC`, or `$WATCHDOG_PID` naming another process, e.g. when the
/// variable leaked to a child of the service).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] without the environment, for tests.
fn watchdog_interval_from(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    our_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.parse().ok()?;
        if pid != our_pid {
            return None;
        }
    }
    let usec: u64 = usec?.to_str()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Sends one datagram to a `$NOTIFY_SOCKET` address: a path (`/run/systemd/notify`) or an
/// abstract name (`@…`, the leading `@` standing for the NUL byte).
fn send_to(addr: &OsStr, state: &str) -> io::Result<()> {
    let bytes = addr.as_bytes();
    // An unbound socket: systemd identifies the sender by its credentials (for
    // NotifyAccess=main), not by a source address.
    let socket = UnixDatagram::unbound()?;
    let sent = match bytes.first() {
        Some(b'/') => socket.send_to(state.as_bytes(), addr)?,
        Some(b'@') => {
            let addr = SocketAddr::from_abstract_name(&bytes[1..])?;
            socket.send_to_addr(state.as_bytes(), &addr)?
        }
        // systemd ≥ 254 may also hand out `vsock:CID:PORT` (in VMs); a daemon on a host
        // never sees it, so it is reported rather than silently dropped.
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unsupported NOTIFY_SOCKET address {addr:?}"),
            ));
        }
    };
    // A datagram is all or nothing; a short count would mean a truncated message.
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "notification truncated: sent {sent} of {} bytes",
                state.len()
            ),
        ));
    }
    Ok(())
}

fn reloading_message(monotonic_usec: Option<u64>) -> String {
    match monotonic_usec {
        Some(usec) => format!("RELOADING=1\nMONOTONIC_USEC={usec}"),
        None => "RELOADING=1".to_string(),
    }
}

/// Keeps a `STATUS=` value on one line: the protocol is newline-separated.
fn one_line(msg: &str) -> String {
    msg.replace(['\n', '\r'], " ")
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC=` with.
///
/// `std::time::Instant` reads this very clock but does not expose its value, and the libc
/// crate is not a direct dependency, so `clock_gettime(2)` is declared here. std already
/// links the C library, so the symbol is always there. The `timespec` layout below
/// (two 64-bit fields) holds for every 64-bit Linux target (glibc and musl); other
/// targets get `None` and [`reloading`] sends `RELOADING=1` alone.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn monotonic_usec() -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock_id: std::ffi::c_int, tp: *mut Timespec) -> std::ffi::c_int;
    }
    // The value of CLOCK_MONOTONIC in <linux/time.h>, fixed by the kernel ABI.
    const CLOCK_MONOTONIC: std::ffi::c_int = 1;

    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `struct timespec` for this target (see the doc
    // comment), and clock_gettime writes only that struct.
    let rc = unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    secs.checked_mul(1_000_000)?.checked_add(nanos / 1_000)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn monotonic_usec() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::sync::{Mutex, MutexGuard};
    use std::time::Instant;

    /// Serializes the tests that change this process's environment.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    fn env_lock() -> MutexGuard<'static, ()> {
        // A test that panicked while holding the lock does not make the others fail.
        ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets or removes variables for the life of the guard, restoring them on drop.
    struct EnvGuard {
        saved: Vec<(&'static str, Option<OsString>)>,
        _lock: MutexGuard<'static, ()>,
    }

    impl EnvGuard {
        fn new(vars: &[(&'static str, Option<&str>)]) -> Self {
            let lock = env_lock();
            let mut saved = Vec::new();
            for (key, value) in vars {
                saved.push((*key, std::env::var_os(key)));
                set(key, *value);
            }
            EnvGuard { saved, _lock: lock }
        }
    }

    impl Drop for EnvGuard {
        fn drop(&mut self) {
            for (key, value) in self.saved.drain(..) {
                match value {
                    // SAFETY: every test touching these variables holds ENV_LOCK, and
                    // nothing else in the test binary reads them.
                    Some(v) => unsafe { std::env::set_var(key, v) },
                    None => unsafe { std::env::remove_var(key) },
                }
            }
        }
    }

    fn set(key: &str, value: Option<&str>) {
        match value {
            // SAFETY: as above, the caller holds ENV_LOCK.
            Some(v) => unsafe { std::env::set_var(key, v) },
            None => unsafe { std::env::remove_var(key) },
        }
    }

    /// A listening notify socket at a temporary path.
    fn listener() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (dir, path, sock)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn assert_nothing_queued(sock: &UnixDatagram) {
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let err = sock.recv(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn sends_exact_datagrams_to_a_path_socket() {
        let (_dir, path, sock) = listener();
        let _env = EnvGuard::new(&[("NOTIFY_SOCKET", Some(path.to_str().unwrap()))]);

        assert!(ready(None).unwrap());
        assert_eq!(recv(&sock), "READY=1");
        assert!(ready(Some("serving 3 subscriptions")).unwrap());
        assert_eq!(recv(&sock), "READY=1\nSTATUS=serving 3 subscriptions");
        assert!(stopping().unwrap());
        assert_eq!(recv(&sock), "STOPPING=1");
        assert!(status("draining\noutboxes").unwrap());
        assert_eq!(recv(&sock), "STATUS=draining outboxes");
        assert!(watchdog().unwrap());
        assert_eq!(recv(&sock), "WATCHDOG=1");
        assert!(notify("EXTEND_TIMEOUT_USEC=1000000").unwrap());
        assert_eq!(recv(&sock), "EXTEND_TIMEOUT_USEC=1000000");

        // The variable stays set: the daemon notifies several times.
        assert_eq!(
            std::env::var_os("NOTIFY_SOCKET"),
            Some(path.clone().into_os_string())
        );
        assert_nothing_queued(&sock);
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let (_dir, path, sock) = listener();
        let _env = EnvGuard::new(&[("NOTIFY_SOCKET", Some(path.to_str().unwrap()))]);

        let before = monotonic_usec().unwrap();
        assert!(reloading().unwrap());
        let after = monotonic_usec().unwrap();
        let msg = recv(&sock);
        let usec: u64 = msg
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("unexpected datagram {msg:?}"))
            .parse()
            .unwrap();
        assert!(
            before <= usec && usec <= after,
            "{before} <= {usec} <= {after}"
        );
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("frontsync-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _env = EnvGuard::new(&[("NOTIFY_SOCKET", Some(&format!("@{name}")))]);

        assert!(ready(Some("ok")).unwrap());
        assert_eq!(recv(&sock), "READY=1\nSTATUS=ok");
    }

    #[test]
    fn unset_or_empty_socket_sends_nothing() {
        let _env = EnvGuard::new(&[("NOTIFY_SOCKET", None)]);
        assert!(!notify("READY=1").unwrap());
        assert!(!ready(Some("x")).unwrap());
        assert!(!reloading().unwrap());
        assert!(!stopping().unwrap());
        assert!(!status("x").unwrap());
        assert!(!watchdog().unwrap());

        set("NOTIFY_SOCKET", Some(""));
        assert!(!notify("READY=1").unwrap());
    }

    #[test]
    fn bad_addresses_are_errors() {
        let err = send_to(OsStr::new("vsock:2:1234"), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nobody-listens");
        assert!(send_to(missing.as_os_str(), "READY=1").is_err());
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec() {
        let us = 4242;
        let os = |s: &'static str| Some(OsStr::new(s));
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval_from(os("30000000"), None, us), half);
        assert_eq!(watchdog_interval_from(os("30000000"), os("4242"), us), half);
        assert_eq!(watchdog_interval_from(os("30000000"), os("1"), us), None);
        assert_eq!(watchdog_interval_from(os("30000000"), os("nope"), us), None);
        assert_eq!(watchdog_interval_from(None, None, us), None);
        assert_eq!(watchdog_interval_from(os("0"), None, us), None);
        assert_eq!(watchdog_interval_from(os("-5"), None, us), None);
        assert_eq!(watchdog_interval_from(os("30s"), None, us), None);
        assert_eq!(
            watchdog_interval_from(os("1"), None, us),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn watchdog_interval_reads_the_environment() {
        let pid = std::process::id().to_string();
        let _env = EnvGuard::new(&[
            ("WATCHDOG_USEC", Some("20000000")),
            ("WATCHDOG_PID", Some(&pid)),
        ]);
        assert_eq!(watchdog_interval(), Some(Duration::from_secs(10)));

        set("WATCHDOG_PID", None);
        assert_eq!(watchdog_interval(), Some(Duration::from_secs(10)));

        set("WATCHDOG_PID", Some("1"));
        assert_eq!(watchdog_interval(), None);

        set("WATCHDOG_PID", None);
        set("WATCHDOG_USEC", None);
        assert_eq!(watchdog_interval(), None);
    }

    #[test]
    fn monotonic_clock_matches_instant() {
        // Instant reads CLOCK_MONOTONIC too: elapsed times must agree, which also checks
        // the hand-written timespec layout.
        let (i0, m0) = (Instant::now(), monotonic_usec().unwrap());
        std::thread::sleep(Duration::from_millis(50));
        let (m1, i1) = (monotonic_usec().unwrap(), Instant::now());
        let by_clock = m1 - m0;
        let by_instant = u64::try_from((i1 - i0).as_micros()).unwrap();
        assert!(by_clock >= 50_000, "{by_clock}");
        assert!(by_clock <= by_instant, "{by_clock} <= {by_instant}");
        assert!(by_instant - by_clock < 20_000, "{by_instant} vs {by_clock}");
    }
}
