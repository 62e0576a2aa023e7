//! Applications: an `http://` / `https://` health endpoint. Every probe is a
//! fresh GET over one kept-alive client; the answer must have an expected
//! status (any 2xx unless configured) and, when configured, contain a text.
//! There is no connection to lose between probes, so a failed GET ends the
//! "connection" and the next successful one restores it.
//!
//! Credentials: a URL user name (with its password, or the `password_file`)
//! is sent as basic auth; a password without a user name (`http://:token@`
//! or a `password_file` alone) as a bearer token. Both, like configured
//! header values, stay out of every message.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use crate::dburl::DbUrl;
use crate::model::{AttemptResult, ConnectResult, DisconnectCause, Identity};
use crate::stores::{
    CloseSignal, ConnectError, Connected, ProbeError, Spec, Store, classify_io, disconnect_cause,
    resolve,
};
use crate::tls::{find_io_error, is_tls_error};

/// The attempt result of an answer with a status the check does not accept.
const STATUS: &str = "status";
/// The attempt result of an answer without the text the check looks for.
const BODY: &str = "body";

/// One accepted status: an exact code or a whole class (`2xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    /// The hundreds digit: `2` for `2xx`.
    Class(u16),
}

impl StatusMatch {
    pub fn matches(self, status: u16) -> bool {
        match self {
            Self::Code(c) => status == c,
            Self::Class(c) => status / 100 == c,
        }
    }
}

impl fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(c) => write!(f, "{c}"),
            Self::Class(c) => write!(f, "{c}xx"),
        }
    }
}

/// The checks of an `http` target. `Debug` never shows header values (they
/// may hold tokens).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// Accepted statuses; any 2xx unless configured.
    pub expected_status: Vec<StatusMatch>,
    /// Text the body must contain (the first [`BODY_LIMIT`] bytes are read).
    pub body_contains: Option<String>,
    /// Extra request headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
}

/// How much of a body is read to look for `body_contains`.
pub const BODY_LIMIT: usize = 1 << 20;

impl Default for HttpCheck {
    fn default() -> Self {
        Self {
            expected_status: vec![StatusMatch::Class(2)],
            body_contains: None,
            headers: BTreeMap::new(),
        }
    }
}

impl HttpCheck {
    /// Whether `status` is accepted.
    pub fn status_ok(&self, status: u16) -> bool {
        self.expected_status.iter().any(|m| m.matches(status))
    }

    /// The accepted statuses as written in the config: `2xx, 301`.
    pub fn expected(&self) -> String {
        self.expected_status
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Debug for HttpCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCheck")
            .field("expected_status", &self.expected())
            .field("body_contains", &self.body_contains)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One application health endpoint.
pub struct HttpStore {
    /// The request, built once: URL without credentials, auth and headers.
    request: Result<Request, String>,
    check: HttpCheck,
    host: String,
    port: u16,
    /// The status of the last accepted answer, for the identity.
    last_status: AtomicU16,
}

/// What every GET sends.
struct Request {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
}

impl HttpStore {
    /// `timeout` bounds every request, body included.
    pub fn new(url: &DbUrl, check: &HttpCheck, timeout: Duration) -> Self {
        // reqwest is built without a TLS provider of its own: use ring, as
        // main() does (a no-op when one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let first = url.first_host();
        Self {
            request: Request::new(url, check, timeout),
            check: check.clone(),
            host: first.host.clone(),
            port: first.port,
            last_status: AtomicU16::new(0),
        }
    }

    /// One GET: the status on success, or the failure.
    async fn get(&self) -> Result<reqwest::StatusCode, Failure> {
        let req = self.request.as_ref().map_err(|e| Failure {
            result: ConnectResult::Protocol.into(),
            cause: DisconnectCause::Error,
            message: e.clone(),
        })?;
        let mut resp = req
            .client
            .get(req.url.clone())
            .headers(req.headers.clone())
            .send()
            .await
            .map_err(failure)?;
        let status = resp.status();
        if !self.check.status_ok(status.as_u16()) {
            return Err(Failure {
                result: AttemptResult::Own(STATUS),
                cause: DisconnectCause::Error,
                message: format!(
                    "unhealthy: HTTP status {} (expected {})",
                    status.as_u16(),
                    self.check.expected()
                ),
            });
        }
        // Read at most BODY_LIMIT bytes to look for the expected text in;
        // a longer body is cut there (the connection is then dropped, not
        // drained: a hostile app cannot make the agent read 100 MB).
        let mut body = Vec::new();
        while body.len() < BODY_LIMIT {
            let Some(chunk) = resp.chunk().await.map_err(failure)? else {
                break;
            };
            let room = BODY_LIMIT - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        if let Some(want) = &self.check.body_contains
            && !contains(&body, want.as_bytes())
        {
            return Err(Failure {
                result: AttemptResult::Own(BODY),
                cause: DisconnectCause::Error,
                message: format!(
                    "unhealthy: HTTP status {} but the body does not contain {want:?}",
                    status.as_u16()
                ),
            });
        }
        self.last_status.store(status.as_u16(), Ordering::Relaxed);
        Ok(status)
    }
}

impl Request {
    fn new(url: &DbUrl, check: &HttpCheck, timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(1)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dbcanary/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut bare = url.clone();
        bare.username = None;
        bare.set_password(None);
        let url_parsed = reqwest::Url::parse(&bare.expose())
            .map_err(|e| format!("not a valid http URL: {e}"))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &check.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a valid header name"))?;
            let mut value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| format!("the value of header {name} is not valid"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let auth = match (&url.username, url.password()) {
            (Some(user), pw) => {
                use base64::Engine as _;
                let pair = format!("{user}:{}", pw.unwrap_or(""));
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            (None, Some(token)) => Some(format!("Bearer {token}")),
            (None, None) => None,
        };
        if let Some(auth) = auth {
            let mut value = reqwest::header::HeaderValue::from_str(&auth)
                .map_err(|_| "the credentials are not valid in an HTTP header".to_string())?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(Self {
            client,
            url: url_parsed,
            headers,
        })
    }
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A failed GET, classified both ways.
struct Failure {
    result: AttemptResult,
    cause: DisconnectCause,
    message: String,
}

/// Classifies a reqwest error. The message never contains the URL.
fn failure(e: reqwest::Error) -> Failure {
    let e = e.without_url();
    let io = find_io_error(&e);
    let (result, cause) = if e.is_timeout() {
        (ConnectResult::Timeout, DisconnectCause::Timeout)
    } else if is_tls_error(&e) {
        (ConnectResult::Tls, DisconnectCause::Error)
    } else if let Some(io) = io {
        (classify_io(io), disconnect_cause(io))
    } else if e.is_connect() {
        (ConnectResult::Io, DisconnectCause::Error)
    } else {
        (ConnectResult::Protocol, DisconnectCause::Error)
    };
    let mut message = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    Failure {
        result: result.into(),
        cause,
        message,
    }
}

impl Store for HttpStore {
    /// The check an answer must pass: the configuration's keys fill it in
    /// (see `config`); the URL alone gives the default.
    type Options = HttpCheck;
    type Conn = ();

    const OWN_RESULTS: &'static [&'static str] = &[STATUS, BODY];

    fn options(url: &DbUrl) -> Result<HttpCheck, String> {
        let mut bare = url.clone();
        bare.username = None;
        bare.set_password(None);
        reqwest::Url::parse(&bare.expose()).map_err(|e| format!("not a valid http URL: {e}"))?;
        Ok(HttpCheck::default())
    }

    /// Every request, body included, is bounded by the target's timeout.
    fn new(spec: Spec<'_>, check: &HttpCheck) -> Self {
        // reqwest is built without a TLS provider of its own: use ring, as
        // main() does (a no-op when one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let first = spec.url.first_host();
        Self {
            request: Request::new(spec.url, check, spec.settings.timeout),
            check: check.clone(),
            host: first.host.clone(),
            port: first.port,
            last_status: AtomicU16::new(0),
        }
    }

    async fn connect(&self, _timeout: Duration) -> Result<Connected<()>, ConnectError> {
        resolve(&self.host, self.port).await?;
        match self.get().await {
            Ok(_) => Ok(Connected {
                conn: (),
                identity: self.identity(),
                closed: CloseSignal::never(),
                serving_since: None,
            }),
            Err(f) => Err(ConnectError::new(f.result, f.message)),
        }
    }

    async fn probe(&self, _conn: &mut ()) -> Result<(), ProbeError> {
        self.get()
            .await
            .map(|_| ())
            .map_err(|f| ProbeError::new(f.cause, f.message))
    }

    async fn identify(&self, _conn: &mut ()) -> Result<Identity, ProbeError> {
        Ok(self.identity())
    }

    async fn close(&self, _conn: ()) {}
}

impl HttpStore {
    /// Where the app answers and the status of its last accepted answer.
    fn identity(&self) -> Identity {
        let mut identity = Identity {
            address: Some(format!("{}:{}", self.host, self.port)),
            read_at: Some(tokio::time::Instant::now()),
            ..Identity::default()
        };
        identity.details.insert(
            "status".into(),
            self.last_status.load(Ordering::Relaxed).to_string(),
        );
        identity
    }
}
