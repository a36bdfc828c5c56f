//! The `next` sink: pushes Highlights to NEXT AI over HTTP.
//!
//! NEXT AI publishes no import API, so the request is configurable; by default it is
//! `POST {endpoint}/teamspaces/{teamspace}/highlights` with `Authorization: Bearer <token>`,
//! `Content-Type: application/json`, `Idempotency-Key: {id}:{revision}` and one Highlight as
//! the body, or, with `batch_size > 1`, `{"highlights":[...]}` to the same URL plus
//! `:batch`. `path` replaces the default template; its only placeholder is `{teamspace}`.
//!
//! This is an [`HttpSink`] so configured, and has all its guarantees: in-order delivery
//! stopping at the first failure with an exact `delivered` count, the answer classified
//! (`2xx`/`409` delivered; `408`/`429`/`5xx`/timeouts/connection errors retryable with
//! `Retry-After` honoured; any other `4xx` rejected with its status and a body excerpt), a
//! refused batch resent item by item so only the bad item is rejected, and the token kept
//! out of `Debug` output, logs and messages.
//!
//! [`NextSink::health_check`] sends `GET {endpoint}/teamspaces/{teamspace}` with the token,
//! which creates nothing, whatever `path` is.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderValue;

use crate::http::{self, DEFAULT_TIMEOUT, HttpSink, HttpSinkConfig, MAX_BATCH_SIZE};
use crate::{BoxFuture, Delivery, Sink, SinkError};

/// The path template used when `path` is not configured.
pub const DEFAULT_PATH: &str = "/teamspaces/{teamspace}/highlights";

/// Appended to the highlights URL for batch requests.
pub const BATCH_SUFFIX: &str = ":batch";

/// How to reach NEXT AI. Start from [`NextSinkConfig::new`].
#[derive(Clone, PartialEq, Eq)]
pub struct NextSinkConfig {
    /// Base URL, e.g. `https://api.nextapp.co/v1`; trailing slashes are ignored.
    pub endpoint: String,
    /// The teamspace id (`ts_123`): letters, digits, `-`, `_`, `.`, `~`.
    pub teamspace: String,
    /// The API token, sent as `Authorization: Bearer <token>`; secret.
    pub token: String,
    /// Path template appended to `endpoint`; `None` means [`DEFAULT_PATH`].
    pub path: Option<String>,
    /// Highlights per request, `1..=`[`MAX_BATCH_SIZE`]; above 1 uses the batch URL.
    pub batch_size: usize,
    /// Bound on one whole request.
    pub timeout: Duration,
}

impl NextSinkConfig {
    /// A config with the defaults: the default path, batch size 1, 10 s timeout.
    pub fn new(
        endpoint: impl Into<String>,
        teamspace: impl Into<String>,
        token: impl Into<String>,
    ) -> NextSinkConfig {
        NextSinkConfig {
            endpoint: endpoint.into(),
            teamspace: teamspace.into(),
            token: token.into(),
            path: None,
            batch_size: 1,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Checks everything that can be checked offline. The error is one lowercase line
    /// naming the config key, never the token.
    pub fn validate(&self) -> Result<(), String> {
        self.urls().map(|_| ())
    }

    /// The URL single Highlights are POSTed to.
    pub fn highlights_url(&self) -> Result<String, String> {
        self.urls().map(|urls| urls.highlights)
    }

    /// The resolved URLs, after checking every field.
    fn urls(&self) -> Result<Urls, String> {
        let base = self.endpoint.trim_end_matches('/');
        let parsed = http::parse_url("endpoint", base)?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(
                "endpoint must not have a query or fragment: the sink appends its own path"
                    .to_owned(),
            );
        }
        check_teamspace(&self.teamspace)?;
        if self.token.is_empty() {
            return Err("token is empty".to_owned());
        }
        if HeaderValue::from_str(&format!("Bearer {}", self.token)).is_err() {
            return Err(
                "token holds characters not allowed in an http header (a trailing newline?)"
                    .to_owned(),
            );
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return Err(format!(
                "batch_size must be between 1 and {MAX_BATCH_SIZE}, not {}",
                self.batch_size
            ));
        }
        if self.timeout.is_zero() {
            return Err("timeout must be longer than 0s".to_owned());
        }
        let path = expand_path(
            self.path.as_deref().unwrap_or(DEFAULT_PATH),
            &self.teamspace,
        )?;
        let highlights = format!("{base}{path}");
        let batch = format!("{highlights}{BATCH_SUFFIX}");
        let health = format!("{base}/teamspaces/{}", self.teamspace);
        // The pieces were checked one by one; this catches what only the whole can show.
        for url in [&highlights, &batch, &health] {
            http::parse_url("path", url)?;
        }
        Ok(Urls {
            highlights,
            batch,
            health,
        })
    }
}

impl fmt::Debug for NextSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NextSinkConfig")
            .field("endpoint", &self.endpoint)
            .field("teamspace", &self.teamspace)
            .field("token", &"***")
            .field("path", &self.path)
            .field("batch_size", &self.batch_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

struct Urls {
    highlights: String,
    batch: String,
    health: String,
}

/// Pushes Highlights to NEXT AI; see the [module docs](self).
#[derive(Debug)]
pub struct NextSink {
    /// Its `Debug` shows no secret.
    http: HttpSink,
}

impl NextSink {
    /// Validates `config` (see [`NextSinkConfig::validate`]) and builds the sink.
    pub fn new(config: NextSinkConfig) -> Result<NextSink, String> {
        let urls = config.urls()?;
        let http = HttpSink::with_kind(
            "next",
            HttpSinkConfig {
                endpoint: urls.highlights,
                batch_endpoint: Some(urls.batch),
                headers: Vec::new(),
                bearer_token: Some(config.token),
                timeout: config.timeout,
                batch_size: config.batch_size,
                signing_secret: None,
                idempotency_header: true,
                health_endpoint: Some(urls.health),
            },
        )?;
        Ok(NextSink { http })
    }

    /// The URL single Highlights are POSTed to.
    pub fn endpoint(&self) -> &str {
        self.http.endpoint()
    }

    /// `GET {endpoint}/teamspaces/{teamspace}` with the token: `2xx` is healthy, `401` and
    /// `403` fail with "token rejected", any other status, a timeout or a connection error
    /// fails naming it.
    pub async fn health_check(&self) -> Result<(), SinkError> {
        self.http.health_check().await
    }
}

impl Sink for NextSink {
    fn kind(&self) -> &'static str {
        "next"
    }

    fn deliver<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<(), SinkError>> {
        self.http.deliver(batch)
    }

    fn max_batch(&self) -> usize {
        self.http.max_batch()
    }
}

/// A teamspace goes into the URL path as is, so only unreserved characters are allowed.
fn check_teamspace(teamspace: &str) -> Result<(), String> {
    if teamspace.is_empty() {
        return Err("teamspace is empty".to_owned());
    }
    if !teamspace
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        return Err(format!(
            "teamspace {teamspace:?} may hold only letters, digits, '-', '_', '.' and '~'"
        ));
    }
    Ok(())
}

/// Checks the path template and replaces `{teamspace}`. The template must start with `/`,
/// hold no query, fragment, whitespace or control character, and no placeholder but
/// `{teamspace}`.
pub fn expand_path(template: &str, teamspace: &str) -> Result<String, String> {
    if !template.starts_with('/') {
        return Err(format!("path {template:?} must start with '/'"));
    }
    if let Some(c) = template
        .chars()
        .find(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
    {
        return Err(format!("path {template:?} must not contain {c:?}"));
    }
    let mut out = String::with_capacity(template.len() + teamspace.len());
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("path {template:?} has a '}}' without a '{{'"));
        }
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find(['{', '}'])
            .filter(|&i| after[i..].starts_with('}'))
            .ok_or_else(|| format!("path {template:?} has a '{{' without a '}}'"))?;
        match &after[..close] {
            "teamspace" => out.push_str(teamspace),
            other => {
                return Err(format!(
                    "path {template:?} has an unknown placeholder {{{other}}}; only {{teamspace}} is allowed"
                ));
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_templates() {
        assert_eq!(
            expand_path(DEFAULT_PATH, "ts_1"),
            Ok("/teamspaces/ts_1/highlights".to_owned())
        );
        assert_eq!(
            expand_path("/a/{teamspace}/b/{teamspace}", "x"),
            Ok("/a/x/b/x".to_owned())
        );
        assert_eq!(expand_path("/plain", "x"), Ok("/plain".to_owned()));
        for (bad, needle) in [
            ("/x/{team}", "{team}"),
            ("/x/{}", "{}"),
            ("/x/{teamspace", "without"),
            ("/x/teamspace}", "without"),
            ("/x/{{teamspace}}", "without"),
            ("/x/{team}{teamspace}", "unknown placeholder"),
            ("x/{teamspace}", "start with"),
            ("", "start with"),
            ("/x?a=1", "'?'"),
            ("/x#f", "'#'"),
            ("/x y", "' '"),
        ] {
            let err = expand_path(bad, "ts").expect_err(bad);
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn urls_from_the_config() {
        let mut config = NextSinkConfig::new("https://api.nextapp.co/v1/", "ts_1", "tok");
        let urls = config.urls().expect("valid");
        assert_eq!(
            urls.highlights,
            "https://api.nextapp.co/v1/teamspaces/ts_1/highlights"
        );
        assert_eq!(
            urls.batch,
            "https://api.nextapp.co/v1/teamspaces/ts_1/highlights:batch"
        );
        assert_eq!(urls.health, "https://api.nextapp.co/v1/teamspaces/ts_1");
        config.path = Some("/spaces/{teamspace}/items".to_owned());
        assert_eq!(
            config.highlights_url(),
            Ok("https://api.nextapp.co/v1/spaces/ts_1/items".to_owned())
        );
    }

    #[test]
    fn invalid_configs_name_the_key_and_never_the_token() {
        let token = "tok_very_secret\n";
        let base = NextSinkConfig::new("https://api.nextapp.co/v1", "ts_1", token);
        let cases: Vec<(NextSinkConfig, &str)> = vec![
            (base.clone(), "token"),
            (
                NextSinkConfig {
                    token: String::new(),
                    ..base.clone()
                },
                "token is empty",
            ),
            (
                NextSinkConfig {
                    token: "t".into(),
                    endpoint: "ftp://x".into(),
                    ..base.clone()
                },
                "endpoint",
            ),
            (
                NextSinkConfig {
                    token: "t".into(),
                    endpoint: "https://x/v1?a=b".into(),
                    ..base.clone()
                },
                "query",
            ),
            (
                NextSinkConfig {
                    token: "t".into(),
                    teamspace: "ts/1".into(),
                    ..base.clone()
                },
                "teamspace",
            ),
            (
                NextSinkConfig {
                    token: "t".into(),
                    batch_size: 0,
                    ..base.clone()
                },
                "batch_size",
            ),
            (
                NextSinkConfig {
                    token: "t".into(),
                    timeout: Duration::ZERO,
                    ..base.clone()
                },
                "timeout",
            ),
            (
                NextSinkConfig {
                    token: "t".into(),
                    path: Some("/{org}/x".into()),
                    ..base.clone()
                },
                "{org}",
            ),
        ];
        for (config, needle) in cases {
            let err = config.validate().expect_err(needle);
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains("very_secret"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let config = NextSinkConfig::new("https://api.nextapp.co/v1", "ts_1", "tok_very_secret");
        let shown = format!("{config:?}");
        assert!(!shown.contains("very_secret"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }
}
