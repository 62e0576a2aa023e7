//! One connection to a Redis server (or a sentinel), the canary's own: TCP
//! or TLS, one command at a time, each reply parsed by [`super::resp`]
//! under its limits. A canary connection spawns no task and holds no
//! channel: the stream and the bytes not yet parsed sit behind one lock
//! that the connection's commands and its [`CloseSignal`] share. While the
//! canary waits for its next probe, the close signal is what reads the
//! socket, so an EOF or a reset is seen the moment it arrives, on RESP2 as
//! on RESP3; during a command, the command reads. Idle, a connection keeps
//! no read buffer at all.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::io::poll_read_buf;

use super::resp::{self, Limits, Parsed, REPLY, ServerError, Value};
use crate::dburl::HostPort;
use crate::model::{ConnectResult, DisconnectCause};
use crate::stores::{CloseSignal, ConnectError, classify_io, disconnect_cause};
use crate::tls::{self, ClientTls, Roots, Verify};

/// What a Redis connection runs on: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Bytes a reply's read asks the socket for at least, and at most at a
/// time (a declared length in between is read in one go).
const READ_MIN: usize = 512;
const READ_MAX: usize = 64 << 10;
/// What an idle connection reads into: an array on the stack, since
/// nothing but the end of the connection is expected.
const IDLE_READ: usize = 64;
/// Bytes a server may send out of turn before the idle connection is given
/// up (the next command would fail on them anyway).
const OUT_OF_TURN_LIMIT: usize = 4 << 10;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the server closed the connection")]
    Closed,
    /// An error reply.
    #[error("{0}")]
    Server(ServerError),
    /// Bytes that are not the reply the canary waits for.
    #[error("{0}")]
    Protocol(String),
}

/// The socket and what was read from it but not yet parsed.
struct Wire {
    /// `None` once the connection is dropped: the socket is closed then,
    /// whoever still holds the close signal.
    io: Option<Box<dyn Io>>,
    buf: BytesMut,
    /// The buffer length worth parsing again at.
    need: usize,
}

/// One connection.
pub struct Link {
    wire: Arc<Mutex<Wire>>,
    /// A command was sent and its reply not read to its end (a failure, or
    /// a timeout that cancelled the read): where the stream stands is
    /// unknown.
    owed: bool,
}

fn lock(wire: &Mutex<Wire>) -> MutexGuard<'_, Wire> {
    wire.lock().unwrap_or_else(|e| e.into_inner())
}

impl Link {
    /// Connects to `addr`: TCP, then TLS when `tls` is given (the system's
    /// CAs, no verification at all when it says insecure).
    pub async fn open(addr: &HostPort, tls: Option<bool>) -> Result<Self, ConnectError> {
        let tcp = TcpStream::connect((addr.host.as_str(), addr.port))
            .await
            .map_err(|e| ConnectError::new(classify_io(&e), format!("{addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match tls {
            None => Box::new(tcp),
            Some(insecure) => {
                let config = tls::client_config(&ClientTls {
                    verify: if insecure {
                        Verify::Nothing
                    } else {
                        Verify::Full
                    },
                    roots: Roots::System,
                    identity: None,
                })
                .map_err(|reason| ConnectError::new(ConnectResult::Tls, reason))?;
                let name = ServerName::try_from(addr.host.clone()).map_err(|_| {
                    ConnectError::new(
                        ConnectResult::Tls,
                        format!("{} is not a TLS server name", addr.host),
                    )
                })?;
                let stream = TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ConnectError::new(classify_io(&e), format!("{addr}: {e}")))?;
                Box::new(stream)
            }
        };
        Ok(Self::on(io))
    }

    fn on(io: Box<dyn Io>) -> Self {
        Self {
            wire: Arc::new(Mutex::new(Wire {
                io: Some(io),
                buf: BytesMut::new(),
                need: 0,
            })),
            owed: false,
        }
    }

    /// Sends a command and reads its reply; an error reply is an error.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Value, Error> {
        self.send(args).await?;
        match self.reply().await? {
            Value::Error(e) => Err(Error::Server(e)),
            v => Ok(v),
        }
    }

    /// Sends a command, once the last reply was read to its end and the
    /// server has not spoken out of turn.
    pub async fn send(&mut self, args: &[&[u8]]) -> Result<(), Error> {
        self.may_send()?;
        let frame = resp::command(args);
        let mut written = 0;
        poll_fn(|cx| lock(&self.wire).poll_write(cx, &frame, &mut written)).await
    }

    /// Sends `commands` in one write and reads their replies in turn: one
    /// round trip for all of them. An error reply is that command's answer,
    /// not a failure of the others.
    pub async fn pipeline<const N: usize>(
        &mut self,
        commands: [&[&[u8]]; N],
    ) -> Result<[Value; N], Error> {
        self.may_send()?;
        let frame: Vec<u8> = commands.iter().flat_map(|c| resp::command(c)).collect();
        let mut written = 0;
        poll_fn(|cx| lock(&self.wire).poll_write(cx, &frame, &mut written)).await?;
        let mut replies = [const { Value::Nil }; N];
        for r in &mut replies {
            // Owed again until the last reply is read.
            self.owed = true;
            *r = self.reply().await?;
        }
        Ok(replies)
    }

    /// Whether a command may go now: the last reply was read to its end,
    /// and the server has not spoken out of turn. Its reply is owed from
    /// now on.
    fn may_send(&mut self) -> Result<(), Error> {
        if self.owed {
            return Err(Error::Protocol(
                "the previous reply was not read to its end".into(),
            ));
        }
        let early = lock(&self.wire).buf.len();
        if early > 0 {
            return Err(Error::Protocol(format!(
                "the server sent {early} bytes out of turn"
            )));
        }
        self.owed = true;
        Ok(())
    }

    /// Reads one reply (or a pub/sub message).
    pub async fn reply(&mut self) -> Result<Value, Error> {
        let v = poll_fn(|cx| lock(&self.wire).poll_reply(cx, &REPLY)).await?;
        self.owed = false;
        Ok(v)
    }

    /// The signal that resolves when the server closes or resets the
    /// connection. It reads the socket while no command does: polled only
    /// between commands (the canary waits for it or runs a probe, never
    /// both).
    pub fn close_signal(&self) -> CloseSignal {
        let wire = self.wire.clone();
        CloseSignal::new(poll_fn(move |cx| lock(&wire).poll_idle(cx)))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The socket closes now, not when the close signal is dropped too.
        lock(&self.wire).io = None;
    }
}

impl Wire {
    fn io(&mut self) -> Result<Pin<&mut Box<dyn Io>>, Error> {
        self.io.as_mut().map(Pin::new).ok_or(Error::Closed)
    }

    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        frame: &[u8],
        written: &mut usize,
    ) -> Poll<Result<(), Error>> {
        let mut io = self.io()?;
        while *written < frame.len() {
            match ready!(io.as_mut().poll_write(cx, &frame[*written..])) {
                Ok(0) => return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into())),
                Ok(n) => *written += n,
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        io.poll_flush(cx).map_err(Error::Io)
    }

    fn poll_reply(&mut self, cx: &mut Context<'_>, limits: &Limits) -> Poll<Result<Value, Error>> {
        loop {
            if !self.buf.is_empty() && self.buf.len() >= self.need {
                match resp::parse(&self.buf, limits) {
                    Ok(Parsed::Done(v, n)) => {
                        self.buf.advance(n);
                        self.need = 0;
                        if self.buf.is_empty() {
                            // Idle connections keep no buffer.
                            self.buf = BytesMut::new();
                        }
                        return Poll::Ready(Ok(v));
                    }
                    Ok(Parsed::Need(n)) => self.need = n,
                    Err(e) => return Poll::Ready(Err(Error::Protocol(e.0))),
                }
            }
            let want = self
                .need
                .saturating_sub(self.buf.len())
                .clamp(READ_MIN, READ_MAX);
            self.buf.reserve(want);
            let Wire { io, buf, .. } = self;
            let io = io.as_mut().map(Pin::new).ok_or(Error::Closed)?;
            match ready!(poll_read_buf(io, cx, buf)) {
                Ok(0) => return Poll::Ready(Err(Error::Closed)),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<DisconnectCause> {
        loop {
            // Closed by the agent: not the transport's news.
            let Some(io) = self.io.as_mut() else {
                return Poll::Pending;
            };
            let mut chunk = [0u8; IDLE_READ];
            let mut rb = ReadBuf::new(&mut chunk);
            match ready!(Pin::new(io).poll_read(cx, &mut rb)) {
                Ok(()) if rb.filled().is_empty() => return Poll::Ready(DisconnectCause::Closed),
                Ok(()) => {
                    if self.buf.len() + rb.filled().len() > OUT_OF_TURN_LIMIT {
                        return Poll::Ready(DisconnectCause::Error);
                    }
                    self.buf.extend_from_slice(rb.filled());
                }
                Err(e) => return Poll::Ready(disconnect_cause(&e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A link and the server side of its socket.
    async fn pair() -> (Link, TcpStream) {
        let (client, server) = crate::stores::socket_pair().await;
        (Link::on(Box::new(client)), server)
    }

    const SOON: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_reply_in_pieces_is_read_whole_and_the_buffer_let_go() {
        let (mut link, mut server) = pair().await;
        let info = format!("${}\r\n{}\r\n", 3000, "x".repeat(3000));
        let task = tokio::spawn(async move {
            let mut cmd = [0u8; 64];
            let n = server.read(&mut cmd).await.unwrap();
            assert_eq!(&cmd[..n], b"*1\r\n$4\r\nINFO\r\n");
            for piece in info.as_bytes().chunks(700) {
                server.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            server
        });
        let v = link.call(&[b"INFO"]).await.unwrap();
        assert_eq!(v.text().unwrap().len(), 3000);
        assert_eq!(lock(&link.wire).buf.capacity(), 0, "no buffer kept idle");
        drop(task.await.unwrap());
    }

    #[tokio::test]
    async fn a_pipeline_sends_every_command_before_the_first_reply() {
        let (mut link, mut server) = pair().await;
        let task = tokio::spawn(async move {
            // Answers nothing until both commands are in.
            let want = b"*1\r\n$5\r\nHELLO\r\n*1\r\n$4\r\nINFO\r\n";
            let mut got = vec![0u8; want.len()];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(&got[..], want);
            server
                .write_all(b"-NOPROTO no\r\n$2\r\nok\r\n")
                .await
                .unwrap();
            server
        });
        let [hello, info] = tokio::time::timeout(SOON, link.pipeline([&[b"HELLO"], &[b"INFO"]]))
            .await
            .expect("one round trip")
            .unwrap();
        assert!(matches!(hello, Value::Error(e) if e.code == "NOPROTO"));
        assert_eq!(info.text().unwrap(), "ok");
        // Every reply was read: the link takes the next command.
        let mut server = task.await.unwrap();
        server.write_all(b"+PONG\r\n").await.unwrap();
        assert!(link.call(&[b"PING"]).await.is_ok());
    }

    #[tokio::test]
    async fn a_huge_declared_reply_is_refused_on_its_header() {
        let (mut link, mut server) = pair().await;
        server.write_all(b"$536870912\r\n").await.unwrap();
        server.write_all(&[b'x'; 8192]).await.unwrap();
        let e = link.call(&[b"PING"]).await.unwrap_err();
        assert!(matches!(e, Error::Protocol(_)), "{e}");
        assert!(
            lock(&link.wire).buf.capacity() <= READ_MAX,
            "little buffered"
        );
        // The stream's place is unknown now.
        let e = link.call(&[b"PING"]).await.unwrap_err();
        assert!(e.to_string().contains("not read to its end"), "{e}");
    }

    #[tokio::test]
    async fn the_close_signal_sees_eof_and_resets_without_a_command() {
        let (link, server) = pair().await;
        let mut closed = link.close_signal();
        drop(server);
        let cause = tokio::time::timeout(SOON, closed.closed()).await.unwrap();
        assert_eq!(cause, DisconnectCause::Closed);

        let (link, server) = pair().await;
        let mut closed = link.close_signal();
        server.set_zero_linger().unwrap();
        drop(server);
        let cause = tokio::time::timeout(SOON, closed.closed()).await.unwrap();
        assert_eq!(cause, DisconnectCause::Reset);
    }

    #[tokio::test]
    async fn dropping_the_link_closes_the_socket_though_the_signal_lives() {
        let (link, mut server) = pair().await;
        let _closed = link.close_signal();
        drop(link);
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(SOON, server.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn bytes_out_of_turn_fail_the_next_command_and_a_flood_ends_the_wait() {
        let (mut link, mut server) = pair().await;
        let mut closed = link.close_signal();
        server.write_all(b"+surprise\r\n").await.unwrap();
        // The signal reads them, and goes on waiting.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), closed.closed())
                .await
                .is_err()
        );
        let e = link.call(&[b"PING"]).await.unwrap_err();
        assert!(e.to_string().contains("out of turn"), "{e}");

        let (link, mut server) = pair().await;
        let mut closed = link.close_signal();
        server.write_all(&[b'x'; 64 << 10]).await.unwrap();
        let cause = tokio::time::timeout(SOON, closed.closed()).await.unwrap();
        assert_eq!(cause, DisconnectCause::Error);
        assert!(lock(&link.wire).buf.len() <= OUT_OF_TURN_LIMIT);
    }
}
