//! The one place rustls is set up: the listener's server configuration,
//! the client configurations of stores that bring no TLS of their own (with
//! libpq-style verification modes), and "is this a TLS error" for error
//! classification. Always the ring provider.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};

/// Certificate chain and private key of a TLS server, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Loads the listener's certificate chain and key. Errors name the key
/// (`cert_file` / `key_file`) and the reason.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, (&'static str, String)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            (
                "cert_file",
                format!("cannot read {}: {e}", files.cert_file.display()),
            )
        })?;
    if certs.is_empty() {
        return Err((
            "cert_file",
            format!("no certificate in {}", files.cert_file.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| {
        (
            "key_file",
            format!("cannot read {}: {e}", files.key_file.display()),
        )
    })?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ("cert_file", e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| ("key_file", format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How much of the server's certificate a client checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Encrypted, not authenticated (libpq `prefer`/`require`).
    Nothing,
    /// The chain must lead to a trusted CA; the name may differ (`verify-ca`).
    Chain,
    /// Chain and host name (`verify-full`).
    Full,
}

/// A PEM file and the URL key that named it, for error messages.
pub type KeyedFile<'a> = (&'static str, &'a Path);

/// Which certificate authorities a client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Roots<'a> {
    /// The web's roots built into the agent (webpki-roots).
    Web,
    /// The system's store (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured), as the
    /// Redis client always read it.
    System,
    /// The CAs of a PEM file named by the URL.
    File(KeyedFile<'a>),
}

/// A client's TLS settings.
#[derive(Debug, Clone, Copy)]
pub struct ClientTls<'a> {
    pub verify: Verify,
    pub roots: Roots<'a>,
    /// A client certificate chain and its key.
    pub identity: Option<(KeyedFile<'a>, KeyedFile<'a>)>,
}

/// A rustls client configuration, read from the files now (so a rotated
/// certificate is picked up at the next reconnect).
pub fn client_config(c: &ClientTls<'_>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match c.verify {
        Verify::Nothing => Arc::new(NoVerification(provider.signature_verification_algorithms)),
        Verify::Chain | Verify::Full => {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots(c.roots)?), provider)
                    .build()
                    .map_err(|e| format!("TLS set-up: {e}"))?;
            if c.verify == Verify::Full {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match c.identity {
        Some(((cert_key, cert), (key_key, key))) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{cert_key} {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("{key_key} {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{cert_key}/{key_key}: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The CAs a client trusts.
fn roots(which: Roots<'_>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match which {
        Roots::File((key, path)) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{key} {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "{key} {}: no usable CA certificate",
                    path.display()
                ));
            }
        }
        Roots::Web => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(match found.errors.first() {
                    Some(e) => format!("no usable CA certificate in the system store: {e}"),
                    None => "no CA certificate in the system store".into(),
                });
            }
        }
    }
    Ok(roots)
}

/// [`Verify::Nothing`]: encrypted, not authenticated (libpq's `prefer` and
/// `require` without `sslrootcert`). Handshake signatures are still checked,
/// so the peer holds the key of the certificate it shows.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// [`Verify::Chain`]: the chain must lead to a trusted CA, the name may differ.
/// rustls checks the chain before the name, so a name error means the
/// chain passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Walks an error chain, looking through the `Arc<dyn Error>` wrappers that
/// drivers (redis-rs) put around the real error.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut out = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(inner) = err.downcast_ref::<Shared>() {
            out.extend(chain(inner.as_ref()));
        }
        if let Some(inner) = err.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            out.push(inner as &(dyn std::error::Error + 'static));
        }
        out.push(err);
        cur = err.source();
    }
    out
}

/// Whether any error in the chain is a rustls error.
pub fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    chain(e).iter().any(|err| err.is::<rustls::Error>())
}

/// The first `io::Error` in an error's chain.
pub fn find_io_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    chain(e)
        .into_iter()
        .find_map(|err| err.downcast_ref::<io::Error>())
}
