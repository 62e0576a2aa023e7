//! "MySQL" endpoints that misbehave on purpose, played by tasks in the test
//! process on free loopback ports: a greeting that declares 16 MiB and
//! streams, a login that is fine and then a reply that declares 16 MiB, a
//! result set of small rows that never ends, and a greeting that dribbles
//! one byte at a time. Each connection streams at most [`STREAM_LIMIT`]
//! bytes; dropping the endpoint ends its tasks.

use mysql_common::constants::{CapabilityFlags, ColumnType, StatusFlags};
use mysql_common::packets::{Column, HandshakePacket};
use mysql_common::proto::MySerialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::free_port;

/// The most one connection streams before it gives up on the client.
const STREAM_LIMIT: usize = 64 << 20;

/// How an endpoint misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// A packet header declaring 0xFFFFFF bytes instead of a greeting, then
    /// zeros.
    HugeGreeting,
    /// A valid greeting and login, then every command answered with a
    /// header declaring 0xFFFFFF bytes, then zeros.
    HugeReply,
    /// A valid greeting and login, then every command answered with a
    /// one-column result set whose 1 KiB rows never end.
    EndlessRows,
    /// A greeting header for 200 bytes, then one byte every 100 ms.
    Dribble,
}

/// One misbehaving endpoint.
pub struct Hostile {
    pub port: u16,
    task: JoinHandle<()>,
}

impl Hostile {
    /// Listens on a free loopback port and misbehaves with every client.
    pub async fn start(behaviour: Behaviour) -> Hostile {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the hostile endpoint");
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                conns.spawn(misbehave(socket, behaviour));
            }
        });
        Hostile { port, task }
    }

    /// A `mysql://` URL for it (the credentials are never checked).
    pub fn url(&self) -> String {
        format!("mysql://canary:pw@127.0.0.1:{}/", self.port)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One packet: header (length, sequence id) and payload.
fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

fn greeting() -> Vec<u8> {
    let caps = CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_CONNECT_ATTRS;
    let mut payload = Vec::new();
    HandshakePacket::new(
        10,
        &b"5.5.5-10.11.0-MariaDB-hostile"[..],
        7,
        *b"abcdefgh",
        Some(&b"ijklmnopqrst\0"[..]),
        caps,
        45,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(&b"mysql_native_password"[..]),
    )
    .serialize(&mut payload);
    frame(0, &payload)
}

/// Reads one packet of the client's (bounded: the client is the canary).
async fn read_packet(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await.ok()?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0; len.min(1 << 20)];
    s.read_exact(&mut payload).await.ok()?;
    Some(payload)
}

/// Writes `chunk` again and again, up to [`STREAM_LIMIT`] or until the
/// client goes away.
async fn stream(s: &mut TcpStream, chunk: &[u8]) {
    let mut sent = 0;
    while sent < STREAM_LIMIT && s.write_all(chunk).await.is_ok() {
        sent += chunk.len();
    }
}

async fn misbehave(mut s: TcpStream, behaviour: Behaviour) {
    let zeros = [0u8; 64 << 10];
    match behaviour {
        Behaviour::HugeGreeting => {
            if s.write_all(&[0xFF, 0xFF, 0xFF, 0x00]).await.is_ok() {
                stream(&mut s, &zeros).await;
            }
        }
        Behaviour::Dribble => {
            if s.write_all(&[200, 0, 0, 0, 10]).await.is_err() {
                return;
            }
            for _ in 0..200 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if s.write_all(b"5").await.is_err() {
                    return;
                }
            }
        }
        Behaviour::HugeReply | Behaviour::EndlessRows => {
            // Greeting, the client's login, OK: logged in, whatever it said.
            if s.write_all(&greeting()).await.is_err() || read_packet(&mut s).await.is_none() {
                return;
            }
            let ok = frame(2, &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]);
            if s.write_all(&ok).await.is_err() || read_packet(&mut s).await.is_none() {
                return;
            }
            if behaviour == Behaviour::HugeReply {
                if s.write_all(&[0xFF, 0xFF, 0xFF, 0x01]).await.is_ok() {
                    stream(&mut s, &zeros).await;
                }
                return;
            }
            let mut column = Vec::new();
            Column::new(ColumnType::MYSQL_TYPE_VAR_STRING)
                .with_name(b"x")
                .serialize(&mut column);
            let mut head = frame(1, &[0x01]);
            head.extend(frame(2, &column));
            head.extend(frame(3, &[0xFE, 0x00, 0x00, 0x02, 0x00]));
            if s.write_all(&head).await.is_err() {
                return;
            }
            // Rows of one 1000-byte string, sequence ids from 4 on.
            let mut row = vec![0xFC, 0xE8, 0x03];
            row.extend_from_slice(&[b'r'; 1000]);
            let mut seq = 4u8;
            let mut sent = 0;
            while sent < STREAM_LIMIT {
                let p = frame(seq, &row);
                if s.write_all(&p).await.is_err() {
                    return;
                }
                sent += p.len();
                seq = seq.wrapping_add(1);
            }
        }
    }
}
