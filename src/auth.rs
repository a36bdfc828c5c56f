//! `frontsync auth front NAME`: authorizes frontsync for an OAuth connection
//! (`[front.NAME] auth = { oauth = ... }`) and stores the grant in the state database.
//!
//! 1. Prints Front's authorize URL with a random `state` (16 bytes of `/dev/urandom`).
//! 2. Waits (10 minutes by default) for the browser's redirect on the `redirect_uri`'s
//!    loopback address with a one-shot HTTP listener, which accepts only a redirect that
//!    carries that `state` and answers the browser with a small page once the grant is
//!    stored. With `--code` (a headless server, the browser elsewhere) the operator pastes
//!    the code, or the whole redirected address, and no listener runs; the `state` cannot
//!    be checked then (the operator copied the code from their own browser).
//! 3. Exchanges the code at the token endpoint (HTTP Basic `client_id:client_secret`).
//! 4. Stores the grant: straight into the state file when no daemon holds it, else through
//!    the running daemon's admin listener (`POST /oauth/{connection}/grant`, loopback only,
//!    signed with the app's client secret), whose writer commits it and whose connection
//!    resumes at once. Where the grant will go is checked before the code is spent.
//!
//! Tokens are never printed: not on the terminal, not in the browser page, not in logs.

use std::collections::HashMap;
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::AdminState;
use crate::config::Config;
use crate::front::client::FrontClient;
use crate::front::model::Me;
use crate::front::oauth::{OAuthApp, TokenEndpoint, auth_command};
use crate::front::ratelimit::RateLimiter;
use crate::http::{Resp, ServeOptions, error, respond};
use crate::ingest::now_ms;
use crate::normalize::format_ms;
use crate::secret::SecretValue;
use crate::store::{OAuthGrant, Store, StoreError};

/// How long `frontsync auth` waits for the redirect unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The header carrying the signature of a grant handed to the daemon.
pub const SIGNATURE_HEADER: &str = "x-frontsync-signature";
/// How far a handed grant's `obtained_at_ms` may be from the daemon's clock: an old
/// request replayed later is refused.
const MAX_GRANT_AGE: Duration = Duration::from_secs(300);
/// The largest accepted `POST /oauth/...` body.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long the command waits for the daemon.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `frontsync auth front NAME`.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// The code (or the redirected URL) pasted by the operator: no listener.
    pub code: Option<String>,
    /// How long to wait for the redirect.
    pub timeout: Duration,
}

/// Runs `frontsync auth front NAME`; returns the exit code (0 authorized, 1 not).
pub fn command(config: &Config, name: &str, options: AuthOptions) -> u8 {
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
    match runtime.block_on(authorize(config, name, options)) {
        Ok(()) => 0,
        Err(e) => {
            for cause in e.chain() {
                eprintln!("error: {cause}");
            }
            1
        }
    }
}

async fn authorize(config: &Config, name: &str, options: AuthOptions) -> anyhow::Result<()> {
    let front = config
        .front
        .get(name)
        .ok_or_else(|| anyhow!("no [front.{name}] in {}", config.source_path.display()))?;
    let oauth = front.oauth.as_ref().ok_or_else(|| {
        anyhow!(
            "[front.{name}] has no auth = {{ oauth = ... }}: `frontsync auth` authorizes oauth connections (an api token needs no authorization)"
        )
    })?;
    let app = OAuthApp::from_config(oauth)
        .map_err(|e| anyhow!("[front.{name}] auth.oauth.client_secret: {e}"))?;
    let endpoint = TokenEndpoint::new(app.clone())?;
    let command = auth_command(name, &config.source_path);

    // Checked before Front is asked: a code is single-use.
    preflight(config).await?;

    let (code, mut browser) = match &options.code {
        Some(pasted) => {
            eprintln!(
                "note: the state check is skipped for a code given with --code (it was copied from your own browser)"
            );
            (code_from(pasted)?, None)
        }
        None => {
            let state = random_state()?;
            let url = app
                .authorize_url(&state)
                .map_err(|e| anyhow!("[front.{name}] auth.oauth: {e}"))?;
            println!("{url}");
            eprintln!(
                "open the url above in a browser signed in to front as an admin, and approve the app; \
                 waiting for the redirect to {} (up to {})",
                app.redirect_uri,
                humantime::format_duration(options.timeout)
            );
            eprintln!(
                "on a headless server: open it on any machine, copy the address front redirects to \
                 (it has ?code=...), then run: {command} --code 'ADDRESS'"
            );
            let (listener, mut redirects) = Loopback::start(&app, &state).await?;
            let redirect = tokio::select! {
                r = redirects.recv() => r,
                _ = tokio::time::sleep(options.timeout) => None,
            };
            let Some(redirect) = redirect else {
                listener.finish().await;
                bail!(
                    "no redirect from front within {}: open the url above in a browser, or run again with --code",
                    humantime::format_duration(options.timeout)
                );
            };
            match redirect {
                Redirect::Denied { error, reply } => {
                    let _ = reply.send(Err(format!(
                        "Front did not authorize frontsync ({error}). Run frontsync auth again to retry."
                    )));
                    listener.finish().await;
                    bail!("front did not authorize frontsync: {error}");
                }
                Redirect::Code { code, reply } => (code, Some((listener, reply))),
            }
        }
    };

    let result = exchange_and_store(config, name, &endpoint, &code, &command).await;
    if let Some((listener, reply)) = browser.take() {
        let page = match &result {
            Ok(_) => Ok(format!(
                "frontsync is authorized for the Front connection \"{name}\". You can close this tab."
            )),
            Err(e) => Err(format!(
                "frontsync could not complete the authorization: {e}. See the terminal."
            )),
        };
        let _ = reply.send(page);
        listener.finish().await;
    }
    let (grant, stored) = result?;

    match stored {
        Stored::File { note } => {
            println!(
                "connection {name} is authorized: the grant is stored in {}; the daemon uses it from its next start",
                config.state.path.display()
            );
            if let Some(note) = note {
                eprintln!("note: {note}");
            }
        }
        Stored::Daemon => println!(
            "connection {name} is authorized: the running daemon stored the grant and resumes the connection now"
        ),
    }
    eprintln!(
        "the access token is valid until {}; frontsync refreshes it by itself from now on",
        format_ms(grant.access_expires_at_ms)
    );
    // Informational: the grant is stored whatever this says.
    let limiter = RateLimiter::new(front.rate_limit_rpm);
    match FrontClient::new(name, &front.api_base, grant.access_token.clone(), limiter) {
        Ok(client) => match client.me::<Me>().await {
            Ok(me) => eprintln!(
                "front accepts the token: company {} ({})",
                me.name.as_deref().unwrap_or("?"),
                me.id
            ),
            Err(e) => eprintln!("warning: the new token was not accepted by front's api: {e}"),
        },
        Err(e) => eprintln!("warning: {e}"),
    }
    Ok(())
}

/// Exchanges the code and stores the grant.
async fn exchange_and_store(
    config: &Config,
    name: &str,
    endpoint: &TokenEndpoint,
    code: &str,
    command: &str,
) -> anyhow::Result<(OAuthGrant, Stored)> {
    let tokens = endpoint
        .exchange_code(code, command)
        .await
        .context("cannot exchange the code for tokens")?;
    let grant = tokens.into_grant(None, now_ms() as i64).ok_or_else(|| {
        anyhow!("the token endpoint answered without a refresh token: frontsync could not renew the access token after an hour")
    })?;
    let stored = store_grant(config, name, &grant, endpoint.app()).await?;
    Ok((grant, stored))
}

/// Where the grant went.
enum Stored {
    /// Into the state file; `note` when the file's owner may keep the daemon out of it.
    File { note: Option<String> },
    /// Handed to the running daemon.
    Daemon,
}

/// Fails early when the grant could be stored nowhere: the state file is held by another
/// process whose admin listener does not answer.
async fn preflight(config: &Config) -> anyhow::Result<()> {
    let path = config.state.path.clone();
    if !path.exists() {
        return Ok(());
    }
    let opened = tokio::task::spawn_blocking(move || Store::open(&path)).await?;
    match opened {
        Ok(store) => {
            drop(store);
            Ok(())
        }
        Err(open_error) => {
            let url = format!("http://{}/healthz", config.admin.listen);
            let answered = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                Ok(())
            } else {
                Err(anyhow!(open_error)).context(format!(
                    "the grant could be stored nowhere: the daemon's admin listener at {url} does not answer either; stop the process holding the state file, or start the daemon, and run auth again"
                ))
            }
        }
    }
}

async fn store_grant(
    config: &Config,
    name: &str,
    grant: &OAuthGrant,
    app: &OAuthApp,
) -> anyhow::Result<Stored> {
    let path = config.state.path.clone();
    let opened = tokio::task::spawn_blocking(move || Store::open(&path)).await?;
    match opened {
        Ok(store) => {
            // No daemon runs on this file: this process is its single writer.
            let (connection, g) = (name.to_string(), grant.clone());
            tokio::task::spawn_blocking(move || {
                store.write(|t| t.put_oauth_grant(&connection, &g))
            })
            .await?
            .context("cannot store the grant")?;
            Ok(Stored::File {
                note: ownership_note(&config.state.path),
            })
        }
        Err(StoreError::AlreadyInUse(_)) => {
            hand_to_daemon(config, name, grant, app).await?;
            Ok(Stored::Daemon)
        }
        // Perhaps not ours to open (the daemon runs as another user): it may still answer.
        Err(open_error) => match hand_to_daemon(config, name, grant, app).await {
            Ok(()) => Ok(Stored::Daemon),
            Err(e) => Err(anyhow!(open_error)).context(format!("{e:#}")),
        },
    }
}

/// A state file whose owner differs from its folder's was probably just created by the
/// wrong user (root, for a daemon with its own user): the daemon could not open it.
fn ownership_note(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let file = std::fs::metadata(path).ok()?;
    let folder = std::fs::metadata(path.parent()?).ok()?;
    (file.uid() != folder.uid()).then(|| {
        format!(
            "{} belongs to uid {} but its folder to uid {}: if the daemon runs as the folder's user, chown the file, or start the daemon and run auth while it runs",
            path.display(),
            file.uid(),
            folder.uid()
        )
    })
}

/// The JSON handed to the daemon. Never given `Debug`: it holds the tokens.
#[derive(serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    access_token: String,
    refresh_token: String,
    access_expires_at_ms: i64,
    obtained_at_ms: i64,
}

/// `base64(HMAC-SHA256(client_secret, "{connection}\n{body}"))`: proves the sender could
/// read the app's client secret (any local user can reach a loopback port), and binds
/// the grant to its connection.
fn sign(secret: &SecretValue, connection: &str, body: &[u8]) -> String {
    let mac = mac(secret, connection, body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn mac(secret: &SecretValue, connection: &str, body: &[u8]) -> Hmac<sha2::Sha256> {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .expect("hmac takes any key length");
    mac.update(connection.as_bytes());
    mac.update(b"\n");
    mac.update(body);
    mac
}

async fn hand_to_daemon(
    config: &Config,
    name: &str,
    grant: &OAuthGrant,
    app: &OAuthApp,
) -> anyhow::Result<()> {
    let url = format!("http://{}/oauth/{name}/grant", config.admin.listen);
    let body = serde_json::to_vec(&GrantBody {
        access_token: grant.access_token.expose().to_string(),
        refresh_token: grant.refresh_token.expose().to_string(),
        access_expires_at_ms: grant.access_expires_at_ms,
        obtained_at_ms: grant.obtained_at_ms,
    })?;
    let signature = sign(&app.client_secret, name, &body);
    let client = reqwest::Client::builder().timeout(DAEMON_TIMEOUT).build()?;
    let response = client
        .post(&url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "the state database is in use, and the daemon's admin listener at {url} is not reachable: {}",
                e.without_url()
            )
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    let message = answer["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("http status {status}"));
    bail!("the running daemon refused the grant: {message}")
}

/// The code from what the operator pasted: the code itself, or the whole redirected URL.
fn code_from(pasted: &str) -> anyhow::Result<String> {
    let pasted = pasted.trim();
    if let Some((_, query)) = pasted.split_once('?') {
        let params = query_params(query);
        if let Some(error) = params.get("error") {
            bail!("the pasted address says front did not authorize frontsync: {error}");
        }
        return match params.get("code") {
            Some(code) if !code.is_empty() => Ok(code.clone()),
            _ => bail!("the pasted address has no code parameter"),
        };
    }
    if pasted.is_empty() || pasted.contains(char::is_whitespace) {
        bail!(
            "--code must be the code parameter of the address front redirected to, or that whole address"
        );
    }
    Ok(pasted.to_string())
}

/// Decoded query parameters (the first of each name).
fn query_params(query: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Ok(url) = reqwest::Url::parse(&format!("http://localhost/?{query}")) {
        for (k, v) in url.query_pairs() {
            out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    out
}

/// 16 random bytes as hex, from the kernel.
fn random_state() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the state parameter")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares without leaking where the first difference is.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

// ---------------------------------------------------------------------------------------
// The loopback listener

/// What the browser brought. `reply` gets the page to show (Ok: success, Err: failure).
enum Redirect {
    Code {
        code: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Denied {
        error: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

struct Loopback {
    stop: CancellationToken,
    conns: TaskTracker,
    task: tokio::task::JoinHandle<()>,
}

struct Ctx {
    state: String,
    path: String,
    redirects: mpsc::Sender<Redirect>,
}

impl Loopback {
    /// Binds the redirect URI's loopback address.
    async fn start(
        app: &OAuthApp,
        state: &str,
    ) -> anyhow::Result<(Loopback, mpsc::Receiver<Redirect>)> {
        let uri = &app.redirect_uri;
        let headless = "open the url above, then run again with --code";
        let url =
            reqwest::Url::parse(uri).map_err(|e| anyhow!("invalid redirect_uri {uri:?}: {e}"))?;
        if url.scheme() != "http" {
            bail!(
                "redirect_uri {uri} is not http://, so frontsync cannot receive the redirect itself: {headless}"
            );
        }
        let host = url.host_str().unwrap_or("");
        let ip = if host.eq_ignore_ascii_case("localhost") {
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        } else {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
        };
        let Some(ip) = ip.filter(IpAddr::is_loopback) else {
            bail!(
                "redirect_uri {uri} is not a loopback address, so frontsync cannot receive the redirect itself: {headless}"
            );
        };
        let addr = SocketAddr::new(ip, url.port_or_known_default().unwrap_or(80));
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow!(
                "cannot listen on {addr} for the redirect: {}; free the port, or {headless}",
                crate::secret::io_reason(&e)
            )
        })?;
        let (tx, rx) = mpsc::channel(1);
        let ctx = Arc::new(Ctx {
            state: state.to_string(),
            path: url.path().to_string(),
            redirects: tx,
        });
        let stop = CancellationToken::new();
        let conns = TaskTracker::new();
        let handler = Arc::new(move |req, _peer| on_redirect(ctx.clone(), req));
        let options = ServeOptions {
            header_timeout: Duration::from_secs(10),
            max_connections: 16,
        };
        let task = tokio::spawn(crate::http::serve(
            listener,
            "oauth-redirect",
            options,
            handler,
            stop.clone(),
            conns.clone(),
        ));
        Ok((Loopback { stop, conns, task }, rx))
    }

    /// Stops listening once the page being answered is sent (bounded).
    async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
        self.conns.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.conns.wait()).await;
    }
}

async fn on_redirect(ctx: Arc<Ctx>, req: Request<Incoming>) -> Resp {
    if req.method() != Method::GET {
        return page(StatusCode::METHOD_NOT_ALLOWED, "Use GET.");
    }
    if req.uri().path() != ctx.path {
        return page(StatusCode::NOT_FOUND, "Not found.");
    }
    let params = query_params(req.uri().query().unwrap_or(""));
    let state = params.get("state").map(String::as_str).unwrap_or("");
    if !same(state, &ctx.state) {
        eprintln!("warning: ignored a redirect whose state this command did not issue");
        return page(
            StatusCode::BAD_REQUEST,
            "This authorization was not started by the waiting frontsync auth (the state does not match). Start again from the address it printed.",
        );
    }
    let (reply, answer) = oneshot::channel();
    let redirect = match (params.get("code"), params.get("error")) {
        (_, Some(error)) => Redirect::Denied {
            error: one_line(error),
            reply,
        },
        (Some(code), None) if !code.is_empty() => Redirect::Code {
            code: code.clone(),
            reply,
        },
        _ => return page(StatusCode::BAD_REQUEST, "The redirect carries no code."),
    };
    if ctx.redirects.try_send(redirect).is_err() {
        return page(
            StatusCode::CONFLICT,
            "This authorization was already received; see the terminal.",
        );
    }
    match answer.await {
        Ok(Ok(text)) => page(StatusCode::OK, &text),
        Ok(Err(text)) => page(StatusCode::INTERNAL_SERVER_ERROR, &text),
        Err(_) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "frontsync auth stopped before finishing; see the terminal.",
        ),
    }
}

fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// A small HTML page (the browser shows it; the text never holds a token).
fn page(status: StatusCode, text: &str) -> Resp {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>frontsync</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>frontsync</h1><p>{escaped}</p></body></html>\n"
    );
    let mut r = respond(status, "text/html; charset=utf-8", body);
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

// ---------------------------------------------------------------------------------------
// The admin route (daemon running)

/// `POST /oauth/{connection}/grant`: stores a grant obtained by `frontsync auth` through
/// the daemon's writer and hands it to the connection's token source. Loopback peers
/// only, `application/json`, signed with the app's client secret (see [`SIGNATURE_HEADER`]).
pub async fn handle_admin(
    state: Arc<AdminState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Resp {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let name = match parts.as_slice() {
        ["oauth", name, "grant"] if !name.is_empty() => name.to_string(),
        _ => return error(StatusCode::NOT_FOUND, "not found"),
    };
    if let Some(refused) = crate::http::guard_local_json_post(&req, peer, "grants") {
        return refused;
    }
    let signature = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let source = {
        let sources = match state.oauth.read() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        sources.get(&name).cloned()
    };
    let Some(source) = source else {
        return error(
            StatusCode::NOT_FOUND,
            &format!(
                "the running daemon has no oauth connection {name:?} (a config change not reloaded yet? send SIGHUP)"
            ),
        );
    };
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large or cut off"),
    };
    let verified = signature
        .and_then(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .ok()
        })
        .is_some_and(|s| {
            mac(&source.app().client_secret, &name, &body)
                .verify_slice(&s)
                .is_ok()
        });
    if !verified {
        return error(
            StatusCode::UNAUTHORIZED,
            "bad or missing signature: grants are handed over by `frontsync auth`, signed with the app's client secret",
        );
    }
    // serde's message is not echoed: it may quote a token.
    let grant: GrantBody = match serde_json::from_slice(&body) {
        Ok(g) => g,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid body (line {} column {})", e.line(), e.column()),
            );
        }
    };
    let now = now_ms() as i64;
    if (now - grant.obtained_at_ms).unsigned_abs() > MAX_GRANT_AGE.as_millis() as u64 {
        return error(
            StatusCode::BAD_REQUEST,
            "the grant was not obtained just now (or the clocks differ): run frontsync auth again",
        );
    }
    let grant = OAuthGrant {
        access_token: SecretValue::new(grant.access_token),
        access_expires_at_ms: grant.access_expires_at_ms,
        refresh_token: SecretValue::new(grant.refresh_token),
        obtained_at_ms: grant.obtained_at_ms,
    };
    // The daemon's own writer: the single-writer rule holds.
    if let Err(e) = state
        .writer
        .put_oauth_grant(&name, grant.clone(), None)
        .await
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    if let Err(e) = source.replace(grant).await {
        return error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    tracing::info!(connection = %name, "oauth grant stored by `frontsync auth`; the connection resumes");
    crate::http::json(StatusCode::OK, &serde_json::json!({ "stored": true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_codes_and_addresses() {
        assert_eq!(code_from(" abc123 ").unwrap(), "abc123");
        assert_eq!(
            code_from("http://127.0.0.1:8790/callback?code=a%2Fb&state=x").unwrap(),
            "a/b"
        );
        assert!(code_from("http://127.0.0.1:8790/callback?error=access_denied&state=x").is_err());
        assert!(code_from("http://127.0.0.1:8790/callback?state=x").is_err());
        assert!(code_from("two words").is_err());
    }

    #[test]
    fn states_are_random_hex() {
        let a = random_state().unwrap();
        let b = random_state().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()) && !same(&a, &b) && !same(&a, "x"));
    }

    #[test]
    fn signatures_bind_the_secret_and_the_connection() {
        let secret = SecretValue::new("s");
        let sig = sign(&secret, "acme", b"{}");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&sig)
            .unwrap();
        assert!(mac(&secret, "acme", b"{}").verify_slice(&raw).is_ok());
        assert!(mac(&secret, "beta", b"{}").verify_slice(&raw).is_err());
        assert!(
            mac(&SecretValue::new("t"), "acme", b"{}")
                .verify_slice(&raw)
                .is_err()
        );
    }

    #[test]
    fn pages_escape_their_text() {
        let r = page(StatusCode::OK, "<script>&\"");
        let body = format!("{:?}", r.body());
        assert!(!body.contains("<script>"), "{body}");
    }
}
