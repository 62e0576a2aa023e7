//! The query options of a `mysql://` URL (the MySQL client's `ssl-*`
//! names), checked once when the configuration is read, and the rustls
//! configuration each `ssl-mode` stands for.

use std::path::PathBuf;

use rustls::ClientConfig;

use crate::dburl::DbUrl;
use crate::tls::{self, ClientTls, Roots, Verify};

/// `?ssl-mode=` (MySQL client names; `-` or `_`, any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text.
    Disabled,
    /// TLS when the server offers it, without verifying its certificate;
    /// plain text otherwise (the default, as for the `mysql` client).
    Preferred,
    /// TLS or fail, without verifying the certificate.
    Required,
    /// TLS, certificate chain verified against `ssl-ca` (or the built-in
    /// web roots); the certificate may name another host.
    VerifyCa,
    /// TLS, certificate chain and host name verified.
    VerifyIdentity,
}

/// The connection options of a MySQL/MariaDB URL beyond user, password,
/// host, port and database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlOptions {
    pub ssl_mode: SslMode,
    /// `ssl-ca`: PEM file of the CA(s) to trust instead of the web roots.
    pub ssl_ca: Option<PathBuf>,
    /// `ssl-cert` and `ssl-key`: client certificate chain and key (PEM).
    pub ssl_cert: Option<PathBuf>,
    pub ssl_key: Option<PathBuf>,
    /// `ssl-server-name`: the name to check the certificate against
    /// (and send as SNI) instead of the URL host.
    pub ssl_server_name: Option<String>,
}

impl MysqlOptions {
    /// Parses and checks the query string of a `mysql://` URL:
    /// `ssl-mode` (`disabled`, `preferred` = default, `required`,
    /// `verify_ca`, `verify_identity`), `ssl-ca`, `ssl-cert`, `ssl-key`,
    /// `ssl-server-name`. Unknown parameters are refused, so that a typo is
    /// not silently ignored.
    pub fn parse(url: &DbUrl) -> Result<Self, String> {
        let mut o = MysqlOptions {
            ssl_mode: SslMode::Preferred,
            ssl_ca: None,
            ssl_cert: None,
            ssl_key: None,
            ssl_server_name: None,
        };
        let query = url.query.as_deref().unwrap_or("");
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let norm = key.to_ascii_lowercase().replace('_', "-");
            match norm.as_str() {
                "ssl-mode" | "sslmode" => {
                    o.ssl_mode = match value.to_ascii_lowercase().replace('-', "_").as_str() {
                        "disabled" | "disable" => SslMode::Disabled,
                        "preferred" | "prefer" => SslMode::Preferred,
                        "required" | "require" => SslMode::Required,
                        "verify_ca" => SslMode::VerifyCa,
                        "verify_identity" | "verify_full" => SslMode::VerifyIdentity,
                        other => {
                            return Err(format!(
                                "ssl-mode {other:?} is not one of disabled, preferred, required, verify_ca, verify_identity"
                            ));
                        }
                    }
                }
                "ssl-ca" => o.ssl_ca = Some(readable(&key, &value)?),
                "ssl-cert" => o.ssl_cert = Some(readable(&key, &value)?),
                "ssl-key" => o.ssl_key = Some(readable(&key, &value)?),
                "ssl-server-name" => {
                    if value.is_empty() {
                        return Err("ssl-server-name is empty".into());
                    }
                    o.ssl_server_name = Some(value.into_owned());
                }
                _ => {
                    return Err(format!(
                        "unknown URL parameter {key:?} (known: ssl-mode, ssl-ca, ssl-cert, ssl-key, ssl-server-name)"
                    ));
                }
            }
        }
        if o.ssl_cert.is_some() != o.ssl_key.is_some() {
            return Err("ssl-cert and ssl-key go together".into());
        }
        if o.ssl_mode == SslMode::Disabled
            && (o.ssl_ca.is_some() || o.ssl_cert.is_some() || o.ssl_server_name.is_some())
        {
            return Err("ssl-ca, ssl-cert, ssl-key and ssl-server-name need an ssl-mode other than disabled".into());
        }
        Ok(o)
    }

    /// The rustls configuration for the mode (`None` = plain text), read
    /// from the files now, so that a rotated certificate is picked up at the
    /// next reconnect. As with the `mysql` client, `preferred` and
    /// `required` encrypt without verifying, even when `ssl-ca` is given.
    pub fn tls_config(&self) -> Result<Option<ClientConfig>, String> {
        let verify = match self.ssl_mode {
            SslMode::Disabled => return Ok(None),
            SslMode::Preferred | SslMode::Required => Verify::Nothing,
            SslMode::VerifyCa => Verify::Chain,
            SslMode::VerifyIdentity => Verify::Full,
        };
        tls::client_config(&ClientTls {
            verify,
            roots: match self.ssl_ca.as_deref() {
                Some(p) => Roots::File(("ssl-ca", p)),
                None => Roots::Web,
            },
            identity: match (&self.ssl_cert, &self.ssl_key) {
                (Some(cert), Some(key)) => Some((("ssl-cert", cert), ("ssl-key", key))),
                _ => None,
            },
        })
        .map(Some)
    }
}

fn readable(key: &str, value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    std::fs::metadata(&path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(u: &str) -> Result<MysqlOptions, String> {
        MysqlOptions::parse(&DbUrl::parse(u).unwrap())
    }

    #[test]
    fn url_options() {
        assert_eq!(p("mysql://h/db").unwrap().ssl_mode, SslMode::Preferred);
        assert_eq!(
            p("mariadb://h/?ssl-mode=DISABLED").unwrap().ssl_mode,
            SslMode::Disabled
        );
        assert_eq!(
            p("mysql://h/?ssl_mode=verify-identity").unwrap().ssl_mode,
            SslMode::VerifyIdentity
        );
        assert!(p("mysql://h/?ssl-mode=sometimes").is_err());
        assert!(
            p("mysql://h/?sslca=/x")
                .unwrap_err()
                .contains("unknown URL parameter")
        );
        assert!(p("mysql://h/?ssl-mode=required&ssl-ca=/nonexistent/ca.pem").is_err());
        assert!(p("mysql://h/?ssl-mode=disabled&ssl-server-name=x").is_err());
    }

    #[test]
    fn every_mode_has_a_tls_configuration_but_disabled() {
        for mode in ["preferred", "required", "verify_ca", "verify_identity"] {
            let o = p(&format!("mysql://h/?ssl-mode={mode}")).unwrap();
            assert!(matches!(o.tls_config(), Ok(Some(_))), "{mode}");
        }
        let off = p("mysql://h/?ssl-mode=disabled").unwrap();
        assert!(matches!(off.tls_config(), Ok(None)));
    }
}
