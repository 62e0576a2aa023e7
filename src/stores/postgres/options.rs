//! The connection options of a PostgreSQL URL (libpq's `sslmode`,
//! `sslrootcert`, `sslcert`/`sslkey`, `target_session_attrs`,
//! `channel_binding`, `connect_timeout`), parsed once when the configuration
//! is read, and the rustls configuration they call for.

use std::path::PathBuf;
use std::time::Duration;

use rustls::ClientConfig;
use tokio_postgres::config::{ChannelBinding, SslMode as DriverSslMode};

use crate::dburl::DbUrl;
use crate::tls::{self, ClientTls, Roots, Verify};

/// `?sslmode=` (libpq's names and meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text.
    Disable,
    /// TLS when the server offers it, plain text otherwise (the default, as
    /// for libpq).
    Prefer,
    /// TLS or fail.
    Require,
    /// TLS, certificate chain verified.
    VerifyCa,
    /// TLS, certificate chain and host name verified.
    VerifyFull,
}

/// `?target_session_attrs=`: which server the canary accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    /// Any server that answers (the default).
    Any,
    /// A server that is not in recovery.
    Primary,
    /// A server whose sessions are not read-only by default.
    ReadWrite,
}

/// The connection options of a PostgreSQL URL beyond user, password, host,
/// port and database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    pub ssl_mode: SslMode,
    /// `sslrootcert`: PEM file of the CA(s) to trust instead of the built-in
    /// web roots. As with libpq, giving it makes `prefer` and `require`
    /// verify the certificate chain too.
    pub ssl_root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey`: client certificate chain and key (PEM).
    pub ssl_cert: Option<PathBuf>,
    pub ssl_key: Option<PathBuf>,
    pub session: SessionAttrs,
    pub channel_binding: ChannelBinding,
    /// `connect_timeout` (seconds), bounded by the target's `timeout`.
    pub connect_timeout: Option<Duration>,
}

const KNOWN: &str =
    "sslmode, sslrootcert, sslcert, sslkey, target_session_attrs, channel_binding, connect_timeout";

impl PgOptions {
    /// Parses and checks the query string of a `postgres://` URL. Unknown
    /// parameters are refused, so that a typo is not silently ignored.
    pub fn parse(url: &DbUrl) -> Result<Self, String> {
        let mut o = PgOptions {
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
            ssl_cert: None,
            ssl_key: None,
            session: SessionAttrs::Any,
            channel_binding: ChannelBinding::Prefer,
            connect_timeout: None,
        };
        let query = url.query.as_deref().unwrap_or("");
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "sslmode" => {
                    o.ssl_mode = match value.as_ref() {
                        "disable" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                            ));
                        }
                    }
                }
                "sslrootcert" => o.ssl_root_cert = Some(readable(&key, &value)?),
                "sslcert" => o.ssl_cert = Some(readable(&key, &value)?),
                "sslkey" => o.ssl_key = Some(readable(&key, &value)?),
                "target_session_attrs" => {
                    o.session = match value.as_ref() {
                        "any" => SessionAttrs::Any,
                        "primary" => SessionAttrs::Primary,
                        "read-write" => SessionAttrs::ReadWrite,
                        other => {
                            return Err(format!(
                                "target_session_attrs {other:?} is not one of any, primary, read-write"
                            ));
                        }
                    }
                }
                "channel_binding" => {
                    o.channel_binding = match value.as_ref() {
                        "disable" => ChannelBinding::Disable,
                        "prefer" => ChannelBinding::Prefer,
                        "require" => ChannelBinding::Require,
                        other => {
                            return Err(format!(
                                "channel_binding {other:?} is not one of disable, prefer, require"
                            ));
                        }
                    }
                }
                "connect_timeout" => {
                    let secs: u64 = value.parse().map_err(|_| {
                        format!("connect_timeout {value:?} is not a whole number of seconds")
                    })?;
                    // libpq: 0 (or nothing) waits forever; here the target's
                    // timeout bounds it anyway.
                    o.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs));
                }
                "application_name" => {
                    return Err(
                        "application_name is set by the canary itself (dbcanary:<target>)".into(),
                    );
                }
                _ => {
                    return Err(format!("unknown URL parameter {key:?} (known: {KNOWN})"));
                }
            }
        }
        if o.ssl_cert.is_some() != o.ssl_key.is_some() {
            return Err("sslcert and sslkey go together".into());
        }
        if o.ssl_mode == SslMode::Disable && (o.ssl_root_cert.is_some() || o.ssl_cert.is_some()) {
            return Err(
                "sslrootcert, sslcert and sslkey need an sslmode other than disable".into(),
            );
        }
        if o.ssl_mode == SslMode::Disable && o.channel_binding == ChannelBinding::Require {
            return Err("channel_binding=require needs TLS (an sslmode other than disable)".into());
        }
        Ok(o)
    }

    /// The driver's TLS mode: `verify-*` are `require` to the driver, the
    /// verification is the rustls configuration's business.
    pub fn driver_ssl_mode(&self) -> DriverSslMode {
        match self.ssl_mode {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        }
    }

    /// The rustls configuration for the mode, read from the files now (so a
    /// rotated certificate is picked up at the next reconnect).
    pub fn tls_config(&self) -> Result<ClientConfig, String> {
        let verify_chain = matches!(self.ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull)
            || (self.ssl_root_cert.is_some() && self.ssl_mode != SslMode::Disable);
        let verify = match self.ssl_mode {
            _ if !verify_chain => Verify::Nothing,
            SslMode::VerifyFull => Verify::Full,
            _ => Verify::Chain,
        };
        tls::client_config(&ClientTls {
            verify,
            roots: match self.ssl_root_cert.as_deref() {
                Some(p) => Roots::File(("sslrootcert", p)),
                None => Roots::Web,
            },
            identity: match (&self.ssl_cert, &self.ssl_key) {
                (Some(cert), Some(key)) => Some((("sslcert", cert), ("sslkey", key))),
                _ => None,
            },
        })
    }
}

fn readable(key: &str, value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    std::fs::metadata(&path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    Ok(path)
}
