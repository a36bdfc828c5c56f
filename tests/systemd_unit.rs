//! Checks `systemd/frontsync.service`: the directives the daemon's lifecycle depends on
//! (always), and, when `systemd-analyze` is installed, that systemd accepts the unit and
//! that its sandbox scores 1.1 or lower on `systemd-analyze security`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The daemon's shutdown grace period (`daemon::GRACE_PERIOD`); systemd must wait longer
/// before SIGKILL, or a slow sink loses its chance to deliver.
const GRACE_PERIOD: Duration = Duration::from_secs(20);

/// Highest acceptable `systemd-analyze security` exposure, in tenths (1.1).
const MAX_EXPOSURE_TENTHS: u32 = 11;

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/frontsync.service")
}

fn unit_text() -> String {
    let path = unit_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One `Key=Value` line of a unit file, with the section it is in.
#[derive(Debug)]
struct Directive {
    section: String,
    key: String,
    value: String,
}

/// Parses the unit file syntax that matters here: `[Section]` headers, `Key=Value` lines,
/// `#`/`;` comments and `\` line continuations.
fn parse_unit(text: &str) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        let full = std::mem::take(&mut pending) + line;
        if let Some(name) = full.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = full
            .split_once('=')
            .unwrap_or_else(|| panic!("not a Key=Value line in the unit: {full:?}"));
        out.push(Directive {
            section: section.clone(),
            key: key.trim().to_string(),
            value: value.trim().to_string(),
        });
    }
    out
}

/// Every value of `key` in `section`, in file order.
fn values<'a>(unit: &'a [Directive], section: &str, key: &str) -> Vec<&'a str> {
    unit.iter()
        .filter(|d| d.section == section && d.key == key)
        .map(|d| d.value.as_str())
        .collect()
}

/// The single value of `key` in `section`; fails when absent or repeated.
fn one<'a>(unit: &'a [Directive], section: &str, key: &str) -> &'a str {
    match values(unit, section, key).as_slice() {
        [v] => v,
        other => panic!("expected exactly one {key}= in [{section}], found {other:?}"),
    }
}

/// Parses a systemd time span (`30s`, `1min 30s`, `2m`, `500ms`, bare seconds).
fn parse_timespan(s: &str) -> Duration {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Duration::from_secs(secs);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("bad time span {s:?}"));
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let micros = match &rest[..unit_len] {
            "us" | "usec" => 1,
            "ms" | "msec" => 1_000,
            "" | "s" | "sec" | "second" | "seconds" => 1_000_000,
            "m" | "min" | "minute" | "minutes" => 60_000_000,
            "h" | "hr" | "hour" | "hours" => 3_600_000_000,
            other => panic!("unknown time unit {other:?} in {s:?}"),
        };
        total += Duration::from_micros(n * micros);
        rest = &rest[unit_len..];
    }
    total
}

#[test]
fn timespan_parser() {
    assert_eq!(parse_timespan("30s"), Duration::from_secs(30));
    assert_eq!(parse_timespan("30"), Duration::from_secs(30));
    assert_eq!(parse_timespan("1min 30s"), Duration::from_secs(90));
    assert_eq!(parse_timespan("2m"), Duration::from_secs(120));
    assert_eq!(parse_timespan("500ms"), Duration::from_millis(500));
}

#[test]
fn unit_has_the_directives_the_daemon_relies_on() {
    let unit = parse_unit(&unit_text());
    let svc = "Service";

    // Readiness, reload and watchdog are reported over sd_notify (src/notify.rs).
    assert_eq!(one(&unit, svc, "Type"), "notify");
    assert_eq!(one(&unit, svc, "NotifyAccess"), "main");

    // Same config file everywhere; bad config is caught before start and before reload.
    let config = "--config /etc/frontsync/config.toml";
    let pre = one(&unit, svc, "ExecStartPre");
    assert!(
        pre.starts_with("/usr/bin/frontsync check ") && pre.contains(config),
        "{pre}"
    );
    let start = one(&unit, svc, "ExecStart");
    assert!(
        start.starts_with("/usr/bin/frontsync run ") && start.contains(config),
        "{start}"
    );
    let reload = values(&unit, svc, "ExecReload");
    assert_eq!(
        reload.len(),
        2,
        "ExecReload= should check, then signal: {reload:?}"
    );
    assert!(reload[0].starts_with("/usr/bin/frontsync check ") && reload[0].contains(config));
    assert!(
        reload[1].contains("kill") && reload[1].contains("-HUP") && reload[1].contains("$MAINPID")
    );

    // Exit 2 (bad config) must not restart in a loop; 1 (runtime failure) restarts.
    assert_eq!(one(&unit, svc, "Restart"), "on-failure");
    let prevent = one(&unit, svc, "RestartPreventExitStatus");
    assert!(prevent.split_whitespace().any(|s| s == "2"), "{prevent}");
    // ...and since that does not cover ExecStartPre=, a start limit ends the loop.
    let burst: u32 = one(&unit, "Unit", "StartLimitBurst").parse().unwrap();
    let interval = parse_timespan(one(&unit, "Unit", "StartLimitIntervalSec"));
    let restart_sec = parse_timespan(one(&unit, svc, "RestartSec"));
    assert!(
        restart_sec * burst < interval,
        "{burst} restarts {restart_sec:?} apart must fit in StartLimitIntervalSec={interval:?}"
    );

    let watchdog = parse_timespan(one(&unit, svc, "WatchdogSec"));
    assert!(
        watchdog >= Duration::from_secs(2),
        "WatchdogSec={watchdog:?}"
    );
    let stop = parse_timespan(one(&unit, svc, "TimeoutStopSec"));
    assert!(
        stop > GRACE_PERIOD,
        "TimeoutStopSec={stop:?} must exceed the {GRACE_PERIOD:?} grace period"
    );

    // Identity, files and privileges.
    assert_eq!(one(&unit, svc, "DynamicUser"), "yes");
    assert_eq!(one(&unit, svc, "StateDirectory"), "frontsync");
    assert_eq!(one(&unit, svc, "ConfigurationDirectory"), "frontsync");
    assert_eq!(one(&unit, svc, "UMask"), "0077");
    assert_eq!(one(&unit, svc, "ProtectSystem"), "strict");
    assert_eq!(one(&unit, svc, "CapabilityBoundingSet"), "");
    assert_eq!(one(&unit, svc, "AmbientCapabilities"), "");
    assert_eq!(one(&unit, svc, "NoNewPrivileges"), "yes");
    assert_eq!(one(&unit, svc, "MemoryDenyWriteExecute"), "yes");
    assert_eq!(
        one(&unit, svc, "RestrictAddressFamilies"),
        "AF_INET AF_INET6 AF_UNIX"
    );
    // It must reach Front and NEXT AI.
    assert!(
        values(&unit, svc, "PrivateNetwork")
            .iter()
            .all(|v| *v == "no")
    );

    // Secrets come from LoadCredential=, never from the environment.
    for key in ["Environment", "EnvironmentFile"] {
        for v in values(&unit, svc, key) {
            let v = v.to_ascii_lowercase();
            for word in ["token", "secret", "password", "key"] {
                assert!(
                    !v.contains(word),
                    "{key}={v} looks like it carries a secret"
                );
            }
        }
    }

    assert_eq!(one(&unit, "Install", "WantedBy"), "multi-user.target");
    assert!(
        values(&unit, "Unit", "After")
            .iter()
            .any(|v| v.contains("network-online.target"))
    );
    assert!(
        values(&unit, "Unit", "Wants")
            .iter()
            .any(|v| v.contains("network-online.target"))
    );
}

/// `systemd-analyze`, or `None` (and a note) when it is not installed.
fn systemd_analyze() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("systemd-analyze"))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!(
            "note: systemd-analyze is not on PATH; skipping this check (install systemd to run it)"
        );
    }
    found
}

fn output_text(out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// True when this systemd-analyze predates an option we pass (systemd < 250).
fn option_unsupported(out: &Output) -> bool {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.contains("unrecognized option") || stderr.contains("Unknown option")
}

#[test]
fn security_exposure_is_at_most_1_1() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    // --offline: score the file itself, without asking a running systemd (there is none
    // in a container). --threshold is in tenths, so it repeats the check in the exit code.
    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--threshold={MAX_EXPOSURE_TENTHS}"))
        .arg(unit_path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", analyze.display()));
    if option_unsupported(&out) {
        eprintln!(
            "note: this systemd-analyze has no --offline (systemd < 250); skipping\n{}",
            output_text(&out)
        );
        return;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    // "→ Overall exposure level for frontsync.service: 1.1 OK 🙂"
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level for"))
        .unwrap_or_else(|| panic!("no overall exposure line\n{}", output_text(&out)));
    let score = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    let (whole, tenth) = score
        .split_once('.')
        .unwrap_or_else(|| panic!("cannot read the score {score:?} in {line:?}"));
    let tenths: u32 = whole.parse::<u32>().unwrap() * 10 + tenth.parse::<u32>().unwrap();
    eprintln!("{line}");
    assert!(
        tenths <= MAX_EXPOSURE_TENTHS,
        "exposure {score} is above 1.1; the failing items:\n{}",
        stdout
            .lines()
            .filter(|l| l.starts_with('✗'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(out.status.success(), "{}", output_text(&out));
}

/// Escapes a path for an `Exec*=` line: quoted (spaces), `%` doubled (specifiers).
fn exec_path(p: &Path) -> String {
    let s = p.to_str().expect("test paths are UTF-8");
    assert!(
        !s.contains('"') && !s.contains('\\'),
        "unsupported character in {s:?}"
    );
    format!("\"{}\"", s.replace('%', "%%"))
}

#[test]
fn systemd_accepts_the_unit() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    // verify checks that every Exec*= command exists, so point them at the binary cargo
    // just built instead of /usr/bin/frontsync; everything else is verified as shipped.
    let binary = Path::new(env!("CARGO_BIN_EXE_frontsync"));
    let mut text = unit_text().replace("/usr/bin/frontsync", &exec_path(binary));
    if !Path::new("/bin/kill").exists() {
        // Minimal images may lack procps; every real host has /bin/kill (or /usr/bin/kill
        // through the merged-/usr symlink).
        eprintln!("note: /bin/kill is missing here; verifying ExecReload= with another binary");
        text = text.replace("/bin/kill", &exec_path(binary));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frontsync.service");
    std::fs::write(&path, text).unwrap();

    // --man=no: whether man pages are installed is a property of the host, not the unit.
    // --recursive-errors=no: report this unit, not the host's own units it pulls in.
    let out = Command::new(&analyze)
        .args(["verify", "--man=no", "--recursive-errors=no", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", analyze.display()));
    if option_unsupported(&out) {
        eprintln!(
            "note: this systemd-analyze lacks --recursive-errors (systemd < 250); skipping\n{}",
            output_text(&out)
        );
        return;
    }
    // verify exits 0 even on unknown keys or unparsable values ("..., ignoring."), so
    // every line it prints about our unit (by path or unit name) is a failure. Lines that
    // do not name it come from the host's environment (other units' files, a missing
    // /run/systemd or system bus in containers): shown, not failed on.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (ours, noise): (Vec<&str>, Vec<&str>) = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| !l.trim().is_empty())
        .partition(|l| {
            l.contains("frontsync.service") || l.contains(dir.path().to_str().unwrap_or("\0"))
        });
    if !noise.is_empty() {
        eprintln!(
            "note: systemd-analyze verify printed, about its environment:\n{}",
            noise.join("\n")
        );
    }
    assert!(
        ours.is_empty(),
        "systemd-analyze verify rejects the unit:\n{}",
        ours.join("\n")
    );
    if !out.status.success() {
        // A failure that names nothing of ours: verify could not start its unit manager
        // here (e.g. no cgroup file system in a container). Nothing was checked.
        eprintln!(
            "note: systemd-analyze verify could not run here; unit not verified\n{}",
            output_text(&out)
        );
    }
}

#[test]
fn verify_catches_a_broken_unit() {
    // The filter above must not hide real errors: an unknown key has to surface.
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frontsync.service");
    std::fs::write(&path, "[Service]\nTpye=notify\nExecStart=/bin/sh -c true\n").unwrap();
    let out = Command::new(&analyze)
        .args(["verify", "--man=no", "--recursive-errors=no", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    if option_unsupported(&out) {
        return;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("frontsync.service") && l.contains("Tpye")),
        "{}",
        output_text(&out)
    );
}
