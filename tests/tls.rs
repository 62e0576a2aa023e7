//! TLS on both sides: the agent's listener over HTTPS and behind basic
//! authentication (what a scraper with and without credentials gets, how a
//! bad certificate is refused), and a `rediss://` canary against a real
//! TLS-only Redis, trusted through `SSL_CERT_FILE` or refused as `tls`.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use support::process::{ServerKind, ServerProcess};
use support::redis::redis_server_bin;
use support::{ATTEMPTS, Agent, Pacing, Proc, check, dbcanary_command, free_port, poll_until};

const PASSWORD: &str = "scrape-planted-pw";

/// GET over TLS trusting only the test CA; returns (status, body).
async fn https_get(
    listen: SocketAddr,
    cert: &Path,
    path: &str,
    auth: Option<&str>,
) -> (u16, String) {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let Ok(tcp) = tokio::net::TcpStream::connect(listen).await else {
        return (0, String::new());
    };
    let mut tls = match TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
    {
        Ok(tls) => tls,
        Err(e) => return (0, e.to_string()),
    };
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(a) = auth {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(a);
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn tls_and_basic_auth_protect_everything_but_healthz() {
    let dir = tempfile::tempdir().unwrap();
    support::certs::make_certs(dir.path(), "127.0.0.1");
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let cfg = dir.path().join("dbcanary.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nlisten = \"{listen}\"\n[agent.tls]\ncert_file = {:?}\nkey_file = {:?}\n[agent.basic_auth]\nusername = \"prom\"\npassword_hash = {hash:?}\n[discovery]\nenv = false\n[[target]]\nname = \"cache\"\nurl = \"redis://127.0.0.1:1\"\n",
            dir.path().join("server.pem"),
            dir.path().join("server.key"),
        ),
    )
    .unwrap();
    let mut cmd = dbcanary_command();
    cmd.arg("--config").arg(&cfg).env("RUST_LOG", "debug");
    let agent = Proc::spawn("dbcanary", cmd, dir.path());
    let cert = dir.path().join("ca.pem");
    poll_until(
        Duration::from_secs(20),
        "the agent answers over TLS",
        async || {
            let (status, body) = https_get(listen, &cert, "/healthz", None).await;
            check(status == 200, (status, body))
        },
    )
    .await;
    let (status, body) = https_get(listen, &cert, "/healthz", None).await;
    assert_eq!((status, body.trim()), (200, "ok"));
    for (path, auth) in [
        ("/metrics", None),
        ("/metrics", Some("prom:wrong")),
        ("/api/v1/targets", Some("someone:scrape-planted-pw")),
        ("/readyz", None),
    ] {
        let (status, _) = https_get(listen, &cert, path, auth).await;
        assert_eq!(status, 401, "{path} with {auth:?}");
    }
    let creds = format!("prom:{PASSWORD}");
    for _ in 0..2 {
        let (status, body) = https_get(listen, &cert, "/metrics", Some(&creds)).await;
        assert_eq!(status, 200);
        assert!(body.contains("dbcanary_build_info"), "{body}");
    }
    let (status, body) = https_get(listen, &cert, "/api/v1/targets", Some(&creds)).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"cache\""), "{body}");
    // Plain HTTP to the TLS port gets no answer that a scraper would take.
    let plain = support::http_get(listen, "/healthz").await;
    assert!(plain.map(|r| r.status != 200).unwrap_or(true));
    assert!(
        !agent.stderr_text().contains(PASSWORD),
        "password in the log"
    );
}

#[test]
fn bad_certificate_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            dir.path().join("cert.pem"),
            dir.path().join("key.pem")
        ),
    )
    .unwrap();
    let out = dbcanary_command()
        .args(["config", "check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agent.tls.cert_file"), "{err}");
    assert!(err.contains("no certificate"), "{err}");
}

/// A Redis that speaks only TLS, with the test CA's certificate in its
/// directory; serving once its TLS port accepts a connection.
struct TlsRedis;

impl ServerKind for TlsRedis {
    const READY_WITHIN: Duration = Duration::from_secs(10);

    fn command(&self, port: u16, dir: &Path) -> Command {
        let mut cmd = Command::new(redis_server_bin());
        cmd.current_dir(dir).args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.pem",
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        cmd
    }

    async fn ready(&mut self, port: u16, _proc: &Proc) -> bool {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    }
}

#[tokio::test]
async fn rediss_canary_verifies_the_server_certificate() {
    let mut redis = ServerProcess::new("redis-tls", "dbcanary-redis-tls-", TlsRedis);
    support::certs::make_certs(redis.dir(), "127.0.0.1");
    redis.launch().await;
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let ca = redis.dir().join("ca.pem");
    let trusted = Agent::builder()
        .pacing(Pacing::FAST)
        .target("secure", &url)
        .env("SSL_CERT_FILE", ca.to_str().unwrap())
        .start()
        .await;
    // The system's roots do not know the test CA.
    let untrusted = Agent::start(&[("secure", &url)]).await;
    trusted
        .wait_up("secure", true, Duration::from_secs(30))
        .await;
    let t = trusted.target("secure").await;
    assert_eq!(t["identity"]["role"], "primary", "{t}");
    untrusted
        .wait_count(ATTEMPTS, "secure", "tls", 1.0, Duration::from_secs(30))
        .await;
    assert_eq!(
        untrusted
            .value("dbcanary_up", &[("target", "secure")])
            .await,
        0.0
    );
}
