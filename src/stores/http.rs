//! Applications: an `http://` / `https://` health endpoint. Every probe is a
//! fresh GET over one kept-alive client; the answer must have a 2xx status.
//! There is no connection to lose between probes, so a failed GET ends the
//! "connection" and the next successful one restores it.

use std::time::Duration;

use crate::dburl::DbUrl;
use crate::events::{ConnectResult, DisconnectCause};
use crate::stores::{
    CloseSignal, ConnectError, Connected, Identity, ProbeError, Store, classify_io,
    disconnect_cause, find_io_error, is_tls_error, resolve,
};

/// One application health endpoint.
pub struct HttpStore {
    /// The URL the GET goes to (credentials included: never logged).
    url: String,
    host: String,
    port: u16,
    client: Result<reqwest::Client, String>,
}

impl HttpStore {
    /// `timeout` bounds every request.
    pub fn new(url: &DbUrl, timeout: Duration) -> Self {
        // reqwest is built without a TLS provider of its own: use ring, as
        // main() does (a no-op when one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(1)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dbcanary/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"));
        let first = url.first_host();
        Self {
            url: url.expose(),
            host: first.host.clone(),
            port: first.port,
            client,
        }
    }

    /// One GET: the status on success, or the failure.
    async fn get(&self) -> Result<reqwest::StatusCode, Failure> {
        let client = self.client.as_ref().map_err(|e| Failure {
            result: ConnectResult::Protocol,
            cause: DisconnectCause::Error,
            message: e.clone(),
        })?;
        let resp = client.get(&self.url).send().await.map_err(failure)?;
        let status = resp.status();
        // Read the body so the connection can be reused.
        let _ = resp.bytes().await.map_err(failure)?;
        if status.is_success() {
            Ok(status)
        } else {
            Err(Failure {
                result: ConnectResult::NotReady,
                cause: DisconnectCause::Error,
                message: format!("unhealthy: HTTP status {}", status.as_u16()),
            })
        }
    }
}

/// A failed GET, classified both ways.
struct Failure {
    result: ConnectResult,
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
        result,
        cause,
        message,
    }
}

impl Store for HttpStore {
    type Conn = ();

    async fn connect(&self, _timeout: Duration) -> Result<Connected<()>, ConnectError> {
        resolve(&self.host, self.port).await?;
        match self.get().await {
            Ok(status) => Ok(Connected {
                conn: (),
                identity: self.identity(status),
                closed: CloseSignal::never(),
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
        Ok(self.identity(reqwest::StatusCode::OK))
    }

    async fn close(&self, _conn: ()) {}
}

impl HttpStore {
    fn identity(&self, status: reqwest::StatusCode) -> Identity {
        let mut identity = Identity {
            address: Some(format!("{}:{}", self.host, self.port)),
            read_at: Some(tokio::time::Instant::now()),
            ..Identity::default()
        };
        identity
            .details
            .insert("status".into(), status.as_u16().to_string());
        identity
    }
}
