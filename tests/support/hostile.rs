//! Hostile servers: endpoints that speak no store's protocol honestly, for
//! every store's tests. Each is a tokio task of the test's runtime on a free
//! loopback port, serving every connection the same way: accept and never
//! answer, answer random bytes, close at once, dribble a byte a second, or
//! declare a huge message and stream it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a hostile server treats each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hostile {
    /// Accepts and never sends a byte (reads and discards what comes).
    Silent,
    /// Sends random bytes at once (whoever speaks first), then closes.
    Garbage,
    /// Closes every connection at once.
    Close,
    /// Sends one byte a second, forever.
    Dribble,
    /// Waits for the client to speak (unless `first` is set: then it
    /// speaks first, as a MySQL server does), sends `prefix` (a header
    /// declaring a huge message) and then zeros without end.
    Huge { prefix: Vec<u8>, first: bool },
}

impl Hostile {
    /// A Redis bulk string of 512 MB, streamed.
    pub fn huge_redis() -> Self {
        Self::Huge {
            prefix: b"$536870912\r\n".to_vec(),
            first: false,
        }
    }

    /// A PostgreSQL message (`R`, authentication) of 2 GiB, after answering
    /// `N` (no TLS) to an SSL request.
    pub fn huge_postgres() -> Self {
        let mut prefix = b"N".to_vec();
        prefix.push(b'R');
        prefix.extend_from_slice(&0x7fff_fff0u32.to_be_bytes());
        Self::Huge {
            prefix,
            first: false,
        }
    }

    /// A MySQL packet of 16 MiB - 1 (the largest a header can declare),
    /// sent before the client speaks, repeated without end.
    pub fn huge_mysql() -> Self {
        Self::Huge {
            prefix: vec![0xff, 0xff, 0xff, 0x00],
            first: true,
        }
    }

    /// A MongoDB reply declaring a 2 GiB message.
    pub fn huge_mongodb() -> Self {
        let mut prefix = 0x7fff_fff0i32.to_le_bytes().to_vec();
        prefix.extend_from_slice(&[0u8; 12]);
        Self::Huge {
            prefix,
            first: false,
        }
    }

    /// An HTTP answer with a 100 MB body.
    pub fn huge_http() -> Self {
        Self::Huge {
            prefix: b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n".to_vec(),
            first: false,
        }
    }
}

/// Starts a hostile server on a free loopback port; returns the port. It
/// runs as long as the test's runtime.
pub async fn start(kind: Hostile) -> u16 {
    let port = super::free_port();
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the hostile server");
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve(conn, kind.clone()));
        }
    });
    port
}

async fn serve(mut conn: TcpStream, kind: Hostile) {
    let mut buf = [0u8; 4096];
    match kind {
        Hostile::Silent => while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {},
        Hostile::Garbage => {
            let noise: Vec<u8> = (0..512).map(|_| rand::random::<u8>()).collect();
            let _ = conn.write_all(&noise).await;
        }
        Hostile::Close => drop(conn),
        Hostile::Dribble => loop {
            if conn.write_all(b"+").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        },
        Hostile::Huge { prefix, first } => {
            if !first {
                let _ = conn.read(&mut buf).await;
            }
            if conn.write_all(&prefix).await.is_err() {
                return;
            }
            let zeros = vec![0u8; 64 << 10];
            while conn.write_all(&zeros).await.is_ok() {}
        }
    }
}

/// The agent process's resident memory, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}
