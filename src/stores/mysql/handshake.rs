//! Opening a canary connection: TCP, the server's greeting, TLS as the
//! `ssl-mode` says (on the same connection: a `preferred` server without
//! TLS is simply spoken to in plain text), and the login.
//!
//! Authentication plugins spoken: `mysql_native_password` and
//! `caching_sha2_password` (its fast path, and its full exchange: the
//! password over TLS, or without TLS encrypted with the server's RSA public
//! key, see [`super::rsa`]), with auth switch requests between them, and
//! `mysql_clear_password` over TLS only. Refused as `auth`, with the reason:
//! `mysql_old_password`, and every other plugin (MariaDB's `client_ed25519`
//! and `parsec`, `sha256_password`, ...).

use std::collections::HashMap;

use mysql_common::collations::CollationId;
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    AuthPlugin, AuthSwitchRequest, HandshakePacket, HandshakeResponse, SslRequest,
};
use mysql_common::proto::MySerialize;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::error::Error;
use super::rsa;
use super::wire::{HANDSHAKE_LIMIT, Link, REPLY_LIMIT, server_error};

/// What the canary asks of the server (intersected with what it offers).
/// No multi-statements, no `LOCAL INFILE`, no compression, the classic EOF
/// packets: the canary's few statements need nothing more.
const WANTED: CapabilityFlags = CapabilityFlags::CLIENT_PROTOCOL_41
    .union(CapabilityFlags::CLIENT_SECURE_CONNECTION)
    .union(CapabilityFlags::CLIENT_LONG_PASSWORD)
    .union(CapabilityFlags::CLIENT_LONG_FLAG)
    .union(CapabilityFlags::CLIENT_TRANSACTIONS)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA)
    .union(CapabilityFlags::CLIENT_CONNECT_ATTRS);

/// Packets of the login after the greeting: an auth switch, a
/// `caching_sha2_password` status, the final OK, with room to spare.
const MAX_AUTH_PACKETS: usize = 6;

/// TLS, as the mode asks for it.
pub enum TlsPlan {
    /// Plain text.
    Off,
    /// TLS if the server offers it, plain text otherwise.
    Prefer(TlsConnector, ServerName<'static>),
    /// TLS or fail.
    Require(TlsConnector, ServerName<'static>),
}

/// Who logs in where.
pub struct Login<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: Option<&'a str>,
    pub database: Option<&'a str>,
    /// Connect attributes (`program_name=dbcanary:<target>`).
    pub attributes: &'a HashMap<String, String>,
    pub tls: TlsPlan,
}

/// A logged-in connection.
pub struct Opened {
    pub link: Link,
    /// The server's id of this session (`KILL CONNECTION` takes it).
    pub connection_id: u32,
    /// `preferred`, and the server offers no TLS: plain text it is.
    pub tls_declined: bool,
}

/// What the greeting says, owned.
struct Greeting {
    caps: CapabilityFlags,
    version: (u16, u16, u16),
    connection_id: u32,
    nonce: Vec<u8>,
    plugin: AuthPlugin<'static>,
}

fn greeting(p: &[u8]) -> Result<Greeting, Error> {
    if p.first() == Some(&0xFF) {
        // No greeting at all: too many connections, host blocked, ...
        return Err(server_error(p));
    }
    if !plugin_data_length_fits(p) {
        return Err(Error::protocol(
            "the server's greeting declares an impossible scramble length",
        ));
    }
    let hs = ParseBuf(p)
        .parse::<HandshakePacket>(())
        .map_err(|_| Error::protocol("the server's greeting is not a MySQL handshake"))?;
    if hs.protocol_version() != 10 {
        return Err(Error::protocol(format!(
            "protocol version {}, where the canary speaks 10",
            hs.protocol_version()
        )));
    }
    let caps = hs.capabilities();
    if !caps
        .contains(CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SECURE_CONNECTION)
    {
        return Err(Error::protocol(
            "the server predates the MySQL 4.1 protocol",
        ));
    }
    Ok(Greeting {
        caps,
        version: hs
            .maria_db_server_version_parsed()
            .or_else(|| hs.server_version_parsed())
            .unwrap_or((0, 0, 0)),
        connection_id: hs.connection_id(),
        nonce: hs.nonce(),
        // A plugin the canary does not speak gets a native scramble, and
        // the server then asks to switch to the one the user has.
        plugin: match hs.auth_plugin() {
            Some(AuthPlugin::CachingSha2Password) => AuthPlugin::CachingSha2Password,
            _ => AuthPlugin::MysqlNativePassword,
        },
    })
}

/// Whether the greeting's auth-plugin-data length is one `mysql_common`
/// 0.37 can read: it computes `length as i8 - 8`, which overflows (a panic
/// with overflow checks) for 0x80..=0x87. Servers send 21; a missing or
/// short greeting is left to the parser to refuse.
fn plugin_data_length_fits(p: &[u8]) -> bool {
    // Protocol version, NUL-terminated server version, then connection id
    // (4), scramble (8), filler (1), capabilities (2), collation (1),
    // status (2), capabilities (2): 20 bytes, and the length byte.
    let Some(nul) = p.iter().skip(1).position(|&b| b == 0) else {
        return true;
    };
    p.get(1 + nul + 1 + 20).is_none_or(|&len| len < 0x80)
}

/// Connects, negotiates TLS and logs in. Every wait is bounded by the
/// caller (the canary's connect timeout); nothing is spawned before the
/// login succeeded.
pub async fn open(login: Login<'_>) -> Result<Opened, Error> {
    let tcp = TcpStream::connect((login.host, login.port)).await?;
    tcp.set_nodelay(true)?;
    let mut link = Link::new(tcp);
    let mut limit = HANDSHAKE_LIMIT;
    let g = greeting(&link.read(&mut limit).await?)?;
    let mut caps = g.caps & WANTED;
    let collation = if g.version >= (5, 5, 3) {
        CollationId::UTF8MB4_GENERAL_CI
    } else {
        CollationId::UTF8MB3_GENERAL_CI
    } as u8;
    let offered = g.caps.contains(CapabilityFlags::CLIENT_SSL);
    let (tls, name) = match &login.tls {
        TlsPlan::Off => (None, None),
        TlsPlan::Prefer(..) if !offered => (None, None),
        TlsPlan::Require(..) if !offered => {
            return Err(Error::Tls(
                "the server offers no TLS, and ssl-mode requires it".into(),
            ));
        }
        TlsPlan::Prefer(c, n) | TlsPlan::Require(c, n) => (Some(c), Some(n.clone())),
    };
    let tls_declined = matches!(login.tls, TlsPlan::Prefer(..)) && !offered;
    if let (Some(connector), Some(name)) = (tls, name) {
        caps |= CapabilityFlags::CLIENT_SSL;
        let request = SslRequest::new(caps, REPLY_LIMIT as u32, collation);
        link.write(&serialized(&request)).await?;
        link = link.upgrade(connector, name).await?;
    }
    link.caps = caps;
    let secure = caps.contains(CapabilityFlags::CLIENT_SSL);
    let mut plugin = g.plugin;
    let mut nonce = g.nonce;
    let auth_data = scramble(&plugin, login.password, &nonce, secure)?;
    let response = HandshakeResponse::new(
        Some(&auth_data[..]),
        g.version,
        Some(login.user.as_bytes()),
        login.database.map(str::as_bytes),
        caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH)
            .then(|| plugin.borrow()),
        caps,
        caps.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS)
            .then(|| login.attributes.clone()),
        REPLY_LIMIT as u32,
    );
    link.write(&serialized(&response)).await?;

    let mut switched = false;
    for _ in 0..MAX_AUTH_PACKETS {
        let p = link.read(&mut limit).await?;
        match p.first() {
            Some(0x00 | 0xFF) => {
                link.status(&p)?;
                return Ok(Opened {
                    link,
                    connection_id: g.connection_id,
                    tls_declined,
                });
            }
            Some(0xFE) if !switched => {
                switched = true;
                if p.len() == 1 {
                    return Err(Error::Auth(
                        "the server asks for mysql_old_password (pre-4.1 password hashing), which the canary does not speak".into(),
                    ));
                }
                let request = ParseBuf(&p)
                    .parse::<AuthSwitchRequest>(())
                    .map_err(|_| Error::protocol("a garbled auth switch request"))?;
                nonce = request.plugin_data().to_vec();
                plugin = request.auth_plugin().into_owned();
                link.write(&scramble(&plugin, login.password, &nonce, secure)?)
                    .await?;
            }
            Some(0x01) if plugin == AuthPlugin::CachingSha2Password => match p.get(1) {
                // Fast path: the server had the password's hash cached; OK follows.
                Some(0x03) => {}
                // Full authentication: the password itself.
                Some(0x04) if secure => {
                    let mut clear = login.password.unwrap_or_default().as_bytes().to_vec();
                    clear.push(0);
                    link.write(&clear).await?;
                }
                // Without TLS: ask for the server's RSA key, encrypt with it.
                Some(0x04) => {
                    link.write(&[0x02]).await?;
                    let key = link.read(&mut limit).await?;
                    let pem = match key.split_first() {
                        Some((0x01, pem)) => pem,
                        Some((0xFF, _)) => return Err(server_error(&key)),
                        _ => {
                            return Err(Error::protocol(
                                "no public key where the server's was due",
                            ));
                        }
                    };
                    let password = login.password.unwrap_or_default();
                    link.write(&rsa::encrypt_password(pem, password, &nonce)?)
                        .await?;
                }
                _ => {
                    return Err(Error::protocol(
                        "a caching_sha2_password status the canary does not know",
                    ));
                }
            },
            _ => return Err(Error::protocol("an unexpected packet during the login")),
        }
    }
    Err(Error::protocol("the login did not end"))
}

/// The auth data for `plugin` (empty for no password).
fn scramble(
    plugin: &AuthPlugin<'_>,
    password: Option<&str>,
    nonce: &[u8],
    secure: bool,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    match plugin {
        // Only these: mysql_common's gen_data panics for the plugins whose
        // support is compiled out (ed25519, parsec).
        AuthPlugin::MysqlNativePassword | AuthPlugin::CachingSha2Password => {
            if let Some(data) = plugin.gen_data(password, nonce) {
                data.serialize(&mut out);
            }
        }
        AuthPlugin::MysqlClearPassword if secure => {
            out.extend_from_slice(password.unwrap_or_default().as_bytes());
            out.push(0);
        }
        AuthPlugin::MysqlClearPassword => {
            return Err(Error::Auth(
                "the server asks for the password in clear text (mysql_clear_password), which the canary sends only over TLS"
                    .into(),
            ));
        }
        other => {
            return Err(Error::Auth(format!(
                "the server asks for the {} authentication plugin; the canary speaks mysql_native_password and caching_sha2_password",
                String::from_utf8_lossy(other.as_bytes())
            )));
        }
    }
    Ok(out)
}

fn serialized(packet: &impl MySerialize) -> Vec<u8> {
    let mut out = Vec::new();
    packet.serialize(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::constants::StatusFlags;
    use mysql_common::scramble::scramble_sha256;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const NONCE: &[u8; 20] = b"abcdefghijklmnopqrst";
    const OK: &[u8] = &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00];

    fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        out.push(seq);
        out.extend_from_slice(payload);
        out
    }

    /// Sends packets, then reads one: its sequence id and payload.
    async fn say(s: &mut TcpStream, packets: &[(u8, &[u8])]) -> (u8, Vec<u8>) {
        for (seq, p) in packets {
            s.write_all(&frame(*seq, p)).await.unwrap();
        }
        let mut header = [0u8; 4];
        s.read_exact(&mut header).await.unwrap();
        let mut payload =
            vec![0; u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize];
        s.read_exact(&mut payload).await.unwrap();
        (header[3], payload)
    }

    /// A MySQL 8 greeting offering `plugin`, with [`NONCE`], no TLS.
    fn greeting_of(plugin: &str) -> Vec<u8> {
        let mut scramble_2 = NONCE[8..].to_vec();
        scramble_2.push(0);
        let mut out = Vec::new();
        HandshakePacket::new(
            10,
            &b"8.0.40"[..],
            42,
            NONCE[..8].try_into().unwrap(),
            Some(scramble_2),
            WANTED,
            45,
            StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            Some(plugin.as_bytes()),
        )
        .serialize(&mut out);
        out
    }

    /// Logs in as `canary` with password `s3cret` to a server played by
    /// `script` (given the accepted socket).
    async fn login_against<F>(
        script: impl FnOnce(TcpStream) -> F + Send + 'static,
    ) -> Result<Opened, Error>
    where
        F: std::future::Future<Output = TcpStream> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move { script(listener.accept().await.unwrap().0).await });
        let attributes = HashMap::from([("program_name".to_string(), "dbcanary:t".to_string())]);
        let opened = open(Login {
            host: "127.0.0.1",
            port,
            user: "canary",
            password: Some("s3cret"),
            database: Some("orders"),
            attributes: &attributes,
            tls: TlsPlan::Off,
        })
        .await;
        drop(server.await.expect("the server's script"));
        opened
    }

    #[tokio::test]
    async fn caching_sha2_fast_path() {
        let opened = login_against(|mut s| async move {
            let (seq, response) = say(&mut s, &[(0, &greeting_of("caching_sha2_password"))]).await;
            assert_eq!(seq, 1);
            let r = ParseBuf(&response).parse::<HandshakeResponse>(()).unwrap();
            assert_eq!(r.user(), b"canary");
            assert_eq!(r.db_name(), Some(&b"orders"[..]));
            assert_eq!(r.scramble_buf(), scramble_sha256(NONCE, b"s3cret").unwrap());
            assert_eq!(
                r.connect_attributes().unwrap()["program_name"],
                "dbcanary:t"
            );
            assert!(!r.capabilities().contains(CapabilityFlags::CLIENT_SSL));
            for (seq, p) in [(2, &[0x01, 0x03][..]), (3, OK)] {
                s.write_all(&frame(seq, p)).await.unwrap();
            }
            s
        })
        .await
        .unwrap();
        assert_eq!(opened.connection_id, 42);
        assert!(!opened.tls_declined, "ssl-mode=disabled declines nothing");
    }

    #[tokio::test]
    async fn caching_sha2_full_exchange_without_tls_encrypts_with_the_servers_key() {
        let dir = tempfile::tempdir().unwrap();
        let pem = rsa::tests::make_key(dir.path());
        let key_dir = dir.path().to_path_buf();
        login_against(move |mut s| async move {
            say(&mut s, &[(0, &greeting_of("caching_sha2_password"))]).await;
            let (seq, asked) = say(&mut s, &[(2, &[0x01, 0x04])]).await;
            assert_eq!(
                (seq, asked.as_slice()),
                (3, &[0x02][..]),
                "a public key request"
            );
            let mut key = vec![0x01];
            key.extend_from_slice(&pem);
            let (seq, block) = say(&mut s, &[(4, &key)]).await;
            assert_eq!(seq, 5);
            let plain: Vec<u8> = rsa::tests::decrypt(&key_dir, &block)
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ NONCE[i % NONCE.len()])
                .collect();
            assert_eq!(plain, b"s3cret\0");
            s.write_all(&frame(6, OK)).await.unwrap();
            s
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn an_auth_switch_to_caching_sha2_uses_the_new_nonce() {
        let fresh = *b"ABCDEFGHIJKLMNOPQRST";
        login_against(move |mut s| async move {
            say(&mut s, &[(0, &greeting_of("mysql_native_password"))]).await;
            let mut switch = Vec::new();
            let mut data = fresh.to_vec();
            data.push(0);
            AuthSwitchRequest::new(&b"caching_sha2_password"[..], data).serialize(&mut switch);
            let (seq, scramble) = say(&mut s, &[(2, &switch)]).await;
            assert_eq!(seq, 3);
            assert_eq!(scramble, scramble_sha256(&fresh, b"s3cret").unwrap());
            for (seq, p) in [(4, &[0x01, 0x03][..]), (5, OK)] {
                s.write_all(&frame(seq, p)).await.unwrap();
            }
            s
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn the_servers_refusal_is_its_error() {
        let e = login_against(|mut s| async move {
            say(&mut s, &[(0, &greeting_of("mysql_native_password"))]).await;
            let mut err = vec![0xFF, 0x15, 0x04, b'#'];
            err.extend_from_slice(b"28000Access denied for user 'canary'");
            s.write_all(&frame(2, &err)).await.unwrap();
            s
        })
        .await
        .err()
        .expect("refused");
        match e {
            Error::Server(s) => {
                assert_eq!((s.code, s.state.as_deref()), (1045, Some("28000")));
                assert!(s.message.starts_with("Access denied"), "{}", s.message);
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn plugins_the_canary_does_not_speak_are_auth_errors() {
        for name in ["client_ed25519", "parsec", "sha256_password", "dialog"] {
            let plugin = AuthPlugin::from_bytes(name.as_bytes());
            let e = scramble(&plugin, Some("pw"), &[0; 20], true).unwrap_err();
            assert!(
                matches!(&e, Error::Auth(m) if m.contains(name)),
                "{name}: {e}"
            );
        }
        let clear = AuthPlugin::MysqlClearPassword;
        assert!(matches!(
            scramble(&clear, Some("pw"), &[], false),
            Err(Error::Auth(_))
        ));
        assert_eq!(scramble(&clear, Some("pw"), &[], true).unwrap(), b"pw\0");
    }

    #[test]
    fn native_and_sha2_scrambles() {
        let nonce = [7u8; 20];
        let native = scramble(&AuthPlugin::MysqlNativePassword, Some("pw"), &nonce, false).unwrap();
        assert_eq!(native.len(), 20);
        let sha2 = scramble(&AuthPlugin::CachingSha2Password, Some("pw"), &nonce, false).unwrap();
        assert_eq!(sha2.len(), 32);
        assert!(
            scramble(&AuthPlugin::MysqlNativePassword, None, &nonce, false)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_greeting_error_is_the_servers_error() {
        // ERR 1040 as a server sends it instead of a greeting: no SQLSTATE.
        let mut p = vec![0xFF, 0x10, 0x04];
        p.extend_from_slice(b"Too many connections");
        match greeting(&p) {
            Err(Error::Server(s)) => {
                assert_eq!(s.code, 1040);
                assert_eq!(s.state, None);
                assert_eq!(s.message, "Too many connections");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted"),
        }
        assert!(matches!(greeting(b"\x09garbage"), Err(Error::Protocol(_))));
    }

    #[test]
    fn garbage_greetings_never_panic() {
        let mut rng = rand::rng();
        for len in 0..120 {
            for _ in 0..500 {
                let mut p: Vec<u8> = (0..len).map(|_| rand::Rng::random(&mut rng)).collect();
                if let Some(b) = p.first_mut() {
                    *b = 10;
                }
                let _ = greeting(&p);
            }
        }
        // The length byte mysql_common 0.37 cannot take.
        let mut p = vec![10, b'8', 0];
        p.extend_from_slice(&[0; 13]); // connection id, scramble, filler
        p.extend_from_slice(&[0xFF, 0xFF, 45, 0, 0, 0xFF, 0xFF]);
        p.push(0x80);
        p.extend_from_slice(&[0; 40]);
        assert!(matches!(greeting(&p), Err(Error::Protocol(_))));
    }
}
