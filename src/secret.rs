//! Secrets: `{ env = "VAR" }`, `{ file = "/path" }` or `{ credential = "name" }`, resolved at
//! start and on reload. A resolved value prints as `***` in every `Debug` and `Display`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a secret comes from. Never holds the value itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// An environment variable.
    Env(String),
    /// A file; relative paths are resolved against the config file's folder at load time.
    File(PathBuf),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>` (see `LoadCredential=`).
    Credential(String),
}

/// Why a secret could not be read. Names where it was looked for, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("environment variable {0} is empty")]
    EnvEmpty(String),
    #[error("cannot read secret file {}: {}", .path.display(), io_reason(.source))]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {0} is empty")]
    FileEmpty(PathBuf),
    #[error("credential {0} needs $CREDENTIALS_DIRECTORY (set by systemd LoadCredential=)")]
    NoCredentialsDirectory(String),
}

impl Secret {
    /// Reads the value. Trailing newlines of files are dropped (editors add them).
    pub fn resolve(&self) -> Result<SecretValue, SecretError> {
        match self {
            Secret::Env(var) => match std::env::var(var) {
                Ok(v) if v.is_empty() => Err(SecretError::EnvEmpty(var.clone())),
                Ok(v) => Ok(SecretValue(v)),
                Err(_) => Err(SecretError::EnvMissing(var.clone())),
            },
            Secret::File(path) => read_file(path),
            Secret::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| SecretError::NoCredentialsDirectory(name.clone()))?;
                read_file(&Path::new(&dir).join(name))
            }
        }
    }

    /// Where the secret is read from, safe to print.
    pub fn describe(&self) -> String {
        match self {
            Secret::Env(v) => format!("env {v}"),
            Secret::File(p) => format!("file {}", p.display()),
            Secret::Credential(c) => format!("credential {c}"),
        }
    }
}

/// `No such file or directory (os error 2)` -> `no such file or directory`: our messages are
/// lowercase, and the errno adds nothing for an operator.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

fn read_file(path: &Path) -> Result<SecretValue, SecretError> {
    let raw = std::fs::read_to_string(path).map_err(|source| SecretError::File {
        path: path.to_path_buf(),
        source,
    })?;
    let value = raw.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(SecretError::FileEmpty(path.to_path_buf()));
    }
    Ok(SecretValue(value.to_string()))
}

/// A resolved secret. `Debug` and `Display` print `***`; use [`SecretValue::expose`] at the
/// one place the value is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a value (tests and OAuth tokens read from the state database).
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(value.into())
    }

    /// The secret itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let v = SecretValue::new("hunter2");
        assert_eq!(format!("{v:?} {v}"), "*** ***");
    }

    #[test]
    fn file_secret_drops_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "abc\n").unwrap();
        assert_eq!(Secret::File(p).resolve().unwrap().expose(), "abc");
    }

    #[test]
    fn missing_env_names_the_variable_only() {
        let err = Secret::Env("FRONTSYNC_TEST_SURELY_UNSET".into())
            .resolve()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable FRONTSYNC_TEST_SURELY_UNSET is not set"
        );
    }

    #[test]
    fn unreadable_file_message_is_lowercase_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing");
        let err = Secret::File(p.clone()).resolve().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read secret file {}: no such file or directory",
                p.display()
            )
        );
    }

    #[test]
    fn describe_names_the_source_only() {
        assert_eq!(Secret::Env("X".into()).describe(), "env X");
        assert_eq!(Secret::File("/a/b".into()).describe(), "file /a/b");
        assert_eq!(Secret::Credential("c".into()).describe(), "credential c");
    }

    #[test]
    fn empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(
            Secret::File(p).resolve(),
            Err(SecretError::FileEmpty(_))
        ));
    }
}
