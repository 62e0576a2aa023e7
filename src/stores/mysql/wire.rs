//! The MySQL client/server protocol on a socket the canary owns, so that an
//! idle connection always has a reader: packets are framed by
//! `mysql_common`'s `PacketCodec` and parsed by its packet types, under
//! hard limits (a declared length is checked before a byte of it is
//! buffered), and once logged in a reader task owns the socket's read side.
//! The moment it reads EOF or an error it resolves the connection's
//! [`CloseSignal`]; that is how a server-side close is seen while the
//! canary waits for its next probe.
//!
//! The reader task only moves bytes; framing and parsing stay with the
//! command that waits for its reply. It ends when the [`Link`] is dropped
//! (its queue's receiver goes away), so it never outlives the connection.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mysql_common::constants::{CapabilityFlags, Command, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    Column, CommonOkPacket, ErrPacket, OkPacketDeserializer, OldEofPacket,
};
use mysql_common::proto::Text;
use mysql_common::proto::codec::PacketCodec;
use mysql_common::proto::codec::error::PacketCodecError;
use mysql_common::row::{Row, RowDeserializer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::error::{Error, ServerError};
use crate::model::DisconnectCause;
use crate::stores::{CloseSignal, bounded_message, disconnect_cause};

/// The socket: plain TCP, or TLS over it.
pub type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// Bytes (headers included) of one reply the canary accepts: far more than
/// its largest (the replication status, a few KiB), far less than what a
/// hostile server may declare (up to 16 MiB per packet, without end).
pub const REPLY_LIMIT: usize = 4 << 20;
/// Bytes of the whole login exchange (greeting, auth switch, public key).
pub const HANDSHAKE_LIMIT: usize = 64 << 10;
/// Bytes of an OK or ERR reply (`COM_PING`).
const SMALL_REPLY_LIMIT: usize = 64 << 10;
/// Columns of a result set (MySQL's own limit per table).
const MAX_COLUMNS: u64 = 4096;
/// Bytes the reader task asks the socket for at a time (what an idle
/// connection keeps allocated: replies are small), and how many such reads
/// it queues for the command that will read them.
const READ_CHUNK: usize = 4 << 10;
const QUEUE: usize = 4;
/// The longest server message kept: it ends up in events and the API.
const MESSAGE_LIMIT: usize = 512;

/// Who reads the socket.
enum Io {
    /// During the login the connecting task reads the socket itself: TLS
    /// may yet replace the stream.
    Direct(Stream),
    /// Once logged in, the reader task owns the read side and queues what
    /// it reads.
    Reader {
        out: WriteHalf<Stream>,
        rx: mpsc::Receiver<io::Result<Bytes>>,
    },
}

/// One connection to a server, at the packet level.
pub struct Link {
    io: Io,
    /// Bytes received and not yet framed.
    buf: BytesMut,
    /// A packet whose chunks are still arriving.
    partial: Vec<u8>,
    codec: PacketCodec,
    /// The capabilities both sides agreed on.
    pub caps: CapabilityFlags,
    /// A command's reply was not read to its end (a failure, or a timeout
    /// that cancelled the read): where the stream stands is unknown.
    mid_reply: bool,
}

impl Link {
    /// A link on a fresh TCP connection; the server speaks first.
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            io: Io::Direct(Either::Left(tcp)),
            buf: BytesMut::new(),
            partial: Vec::new(),
            codec: PacketCodec::default(),
            caps: CapabilityFlags::empty(),
            mid_reply: false,
        }
    }

    /// Reads one packet, charging its size (header included) to `limit`:
    /// a packet whose declared length exceeds what is left is refused on
    /// its header, before its bytes are buffered.
    pub async fn read(&mut self, limit: &mut usize) -> Result<Vec<u8>, Error> {
        loop {
            // The codec refuses a chunk that would take the packet over this.
            self.codec.max_allowed_packet = limit.saturating_sub(4);
            match self.codec.decode(&mut self.buf, &mut self.partial) {
                Ok(true) => {
                    let packet = std::mem::take(&mut self.partial);
                    *limit = limit
                        .checked_sub(packet.len() + 4)
                        .ok_or_else(|| too_much(packet.len(), *limit))?;
                    return Ok(packet);
                }
                Ok(false) => {}
                Err(PacketCodecError::PacketTooLarge) => {
                    let declared = self
                        .buf
                        .get(..3)
                        .map_or(0, |h| u32::from_le_bytes([h[0], h[1], h[2], 0]));
                    return Err(too_much(declared as usize, *limit));
                }
                Err(PacketCodecError::PacketsOutOfSync) => {
                    return Err(Error::protocol("packets out of sequence"));
                }
                Err(PacketCodecError::BadCompressedPacketHeader) => {
                    return Err(Error::protocol("a compressed packet, never asked for"));
                }
                Err(PacketCodecError::Io(e)) => return Err(Error::Io(e)),
            }
            self.fill().await?;
        }
    }

    /// Waits for more bytes from the server.
    async fn fill(&mut self) -> Result<(), Error> {
        match &mut self.io {
            Io::Direct(s) => {
                self.buf.reserve(READ_CHUNK);
                if s.read_buf(&mut self.buf).await? == 0 {
                    return Err(Error::eof());
                }
            }
            Io::Reader { rx, .. } => match rx.recv().await {
                Some(Ok(bytes)) => self.buf.extend_from_slice(&bytes),
                Some(Err(e)) => return Err(Error::Io(e)),
                None => return Err(Error::eof()),
            },
        }
        Ok(())
    }

    /// Sends one packet (with the next sequence id).
    pub async fn write(&mut self, payload: &[u8]) -> Result<(), Error> {
        let mut frame = BytesMut::with_capacity(payload.len() + 4);
        self.codec.max_allowed_packet = REPLY_LIMIT;
        self.codec
            .encode(&mut &payload[..], &mut frame)
            .map_err(|e| Error::protocol(format!("cannot frame a packet: {e}")))?;
        match &mut self.io {
            Io::Direct(s) => {
                s.write_all(&frame).await?;
                s.flush().await?;
            }
            Io::Reader { out, .. } => {
                out.write_all(&frame).await?;
                out.flush().await?;
            }
        }
        Ok(())
    }

    /// Wraps the TCP connection in TLS (after the `SslRequest`).
    pub async fn upgrade(
        self,
        tls: &TlsConnector,
        name: ServerName<'static>,
    ) -> Result<Link, Error> {
        let Io::Direct(Either::Left(tcp)) = self.io else {
            return Err(Error::protocol("TLS asked for on a connection that has it"));
        };
        if !self.buf.is_empty() {
            return Err(Error::protocol(
                "the server sent data before the TLS handshake",
            ));
        }
        let stream = tls.connect(name, tcp).await?;
        Ok(Link {
            io: Io::Direct(Either::Right(Box::new(stream))),
            ..self
        })
    }

    /// Hands the read side to a reader task; returns the signal it
    /// resolves when the server closes or resets the connection.
    pub fn start_reader(self) -> (Link, CloseSignal) {
        let Io::Direct(stream) = self.io else {
            unreachable!("the reader starts once, after the login");
        };
        let (input, out) = tokio::io::split(stream);
        let (tx, rx) = mpsc::channel(QUEUE);
        let (closed_tx, closed_rx) = oneshot::channel();
        tokio::spawn(pump(input, tx, closed_tx));
        let closed =
            CloseSignal::new(async move { closed_rx.await.unwrap_or(DisconnectCause::Closed) });
        (
            Link {
                io: Io::Reader { out, rx },
                // The login's read buffer is not needed while idle.
                buf: if self.buf.is_empty() {
                    BytesMut::new()
                } else {
                    self.buf
                },
                ..self
            },
            closed,
        )
    }

    /// Sends a command, once the last reply was read to its end and the
    /// server has not spoken out of turn.
    async fn command(&mut self, command: Command, arg: &[u8]) -> Result<(), Error> {
        if self.mid_reply {
            return Err(Error::protocol(
                "the previous reply was not read to its end",
            ));
        }
        self.out_of_turn()?;
        self.codec.reset_seq_id();
        let mut payload = Vec::with_capacity(1 + arg.len());
        payload.push(command as u8);
        payload.extend_from_slice(arg);
        self.mid_reply = true;
        self.write(&payload).await
    }

    /// Fails if the server sent something while no command was pending: a
    /// parting error packet (MySQL's `wait_timeout`, a kill) or garbage.
    fn out_of_turn(&mut self) -> Result<(), Error> {
        if let Io::Reader { rx, .. } = &mut self.io {
            for _ in 0..QUEUE {
                match rx.try_recv() {
                    Ok(Ok(bytes)) => self.buf.extend_from_slice(&bytes),
                    Ok(Err(e)) => return Err(Error::Io(e)),
                    Err(_) => break,
                }
            }
        }
        if self.buf.is_empty() && self.partial.is_empty() {
            return Ok(());
        }
        match self.buf.get(4..) {
            Some(payload) if payload.first() == Some(&0xFF) => Err(server_error(payload)),
            _ => Err(Error::protocol(format!(
                "the server sent {} bytes out of turn",
                self.buf.len() + self.partial.len()
            ))),
        }
    }

    /// The reply of a command is complete.
    fn done<T>(&mut self, r: Result<T, Error>) -> Result<T, Error> {
        if matches!(r, Ok(_) | Err(Error::Server(_))) {
            self.mid_reply = false;
        }
        // A large reply leaves no large buffer behind on an idle connection.
        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_CHUNK {
            self.buf = BytesMut::new();
        }
        r
    }

    /// `COM_PING`: one round trip, answered with OK.
    pub async fn ping(&mut self) -> Result<(), Error> {
        self.command(Command::COM_PING, &[]).await?;
        let mut limit = SMALL_REPLY_LIMIT;
        let reply = match self.read(&mut limit).await {
            Ok(p) => self.status(&p).map(|_| ()),
            Err(e) => Err(e),
        };
        self.done(reply)
    }

    /// `COM_QUERY` with the text protocol; keeps the first `keep` rows of
    /// the first result set (the rest is read and dropped).
    pub async fn query(&mut self, sql: &str, keep: usize) -> Result<Vec<Row>, Error> {
        self.command(Command::COM_QUERY, sql.as_bytes()).await?;
        let mut limit = REPLY_LIMIT;
        let mut rows = Vec::new();
        let mut keep = keep;
        let reply = loop {
            match self.result(&mut limit, &mut rows, keep).await {
                Ok(true) => keep = 0,
                Ok(false) => break Ok(rows),
                Err(e) => break Err(e),
            }
        };
        self.done(reply)
    }

    /// Reads one result (an OK, or a result set into `rows`); whether the
    /// server says another follows.
    async fn result(
        &mut self,
        limit: &mut usize,
        rows: &mut Vec<Row>,
        keep: usize,
    ) -> Result<bool, Error> {
        let first = self.read(limit).await?;
        let count = match first.first() {
            Some(0x00 | 0xFF) => return self.status(&first).map(more_results),
            Some(0xFB) => return Err(Error::protocol("a LOCAL INFILE request, never asked for")),
            _ => column_count(&first)?,
        };
        let mut columns = Vec::new();
        for _ in 0..count {
            let p = self.read(limit).await?;
            columns.push(
                ParseBuf(&p)
                    .parse::<Column>(())
                    .map_err(|_| Error::protocol("a garbled column definition"))?,
            );
        }
        let p = self.read(limit).await?;
        if !is_eof(&p) {
            return Err(Error::protocol("no EOF after the column definitions"));
        }
        let columns: Arc<[Column]> = columns.into();
        loop {
            let p = self.read(limit).await?;
            if is_eof(&p) {
                return self.eof_status(&p).map(more_results);
            }
            if p.first() == Some(&0xFF) {
                return Err(server_error(&p));
            }
            if rows.len() < keep {
                let row = ParseBuf(&p)
                    .parse::<RowDeserializer<(), Text>>(columns.clone())
                    .map_err(|_| Error::protocol("a garbled row"))?;
                rows.push(row.into_inner());
            }
        }
    }

    /// The status of an OK packet, or the server's error.
    pub fn status(&self, p: &[u8]) -> Result<StatusFlags, Error> {
        match p.first() {
            Some(0x00) => ParseBuf(p)
                .parse::<OkPacketDeserializer<CommonOkPacket>>(self.caps)
                .map(|ok| ok.into_inner().status_flags())
                .map_err(|_| Error::protocol("a garbled OK packet")),
            Some(0xFF) => Err(server_error(p)),
            Some(b) => Err(Error::protocol(format!(
                "expected OK or an error, got a packet starting with 0x{b:02x}"
            ))),
            None => Err(Error::protocol("an empty packet")),
        }
    }

    fn eof_status(&self, p: &[u8]) -> Result<StatusFlags, Error> {
        ParseBuf(p)
            .parse::<OkPacketDeserializer<OldEofPacket>>(self.caps)
            .map(|eof| eof.into_inner().status_flags())
            .map_err(|_| Error::protocol("a garbled EOF packet"))
    }

    /// Says goodbye (`COM_QUIT`) and closes the connection; the caller
    /// bounds how long this may take.
    pub async fn quit(mut self) {
        self.codec.reset_seq_id();
        if self.write(&[Command::COM_QUIT as u8]).await.is_ok() {
            let _ = match &mut self.io {
                Io::Direct(s) => s.shutdown().await,
                Io::Reader { out, .. } => out.shutdown().await,
            };
        }
    }
}

/// The reader task: moves what the socket gives to the link's queue until
/// EOF or an error (then resolves the close signal) or until the link is
/// gone. While the queue is full (the server sends what nobody asked for)
/// it waits: bounded memory over timely news, and the next command fails
/// on those bytes anyway.
async fn pump(
    mut input: ReadHalf<Stream>,
    tx: mpsc::Sender<io::Result<Bytes>>,
    closed: oneshot::Sender<DisconnectCause>,
) {
    let cause = loop {
        let mut chunk = BytesMut::with_capacity(READ_CHUNK);
        let read = tokio::select! {
            _ = tx.closed() => return,
            r = input.read_buf(&mut chunk) => r,
        };
        match read {
            Ok(0) => break DisconnectCause::Closed,
            Ok(_) => {
                if tx.send(Ok(chunk.freeze())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let cause = disconnect_cause(&e);
                let _ = tx.try_send(Err(e));
                break cause;
            }
        }
    };
    let _ = closed.send(cause);
}

/// A server's error packet as an error (a garbled one as a protocol
/// error). Before the login the server sends no SQLSTATE: its marker
/// decides how the packet is read.
pub fn server_error(p: &[u8]) -> Error {
    let caps = if p.get(3) == Some(&b'#') {
        CapabilityFlags::CLIENT_PROTOCOL_41
    } else {
        CapabilityFlags::empty()
    };
    match ParseBuf(p).parse::<ErrPacket>(caps) {
        Ok(ErrPacket::Error(e)) => {
            let message = bounded_message(e.message_str().into_owned(), MESSAGE_LIMIT);
            Error::Server(ServerError {
                code: e.error_code(),
                state: e.sql_state_ref().map(|s| s.as_str().into_owned()),
                message,
            })
        }
        _ => Error::protocol("a garbled error packet"),
    }
}

fn too_much(declared: usize, left: usize) -> Error {
    Error::protocol(format!(
        "the server's reply exceeds the canary's limit: a packet of {declared} bytes, with {left} bytes left"
    ))
}

fn more_results(s: StatusFlags) -> bool {
    s.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS)
}

/// An EOF packet (no `CLIENT_DEPRECATE_EOF`): `0xFE` and short, where a
/// row starting with `0xFE` (an 8-byte length) is at least 9 bytes.
fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xFE) && p.len() < 9
}

fn column_count(p: &[u8]) -> Result<u64, Error> {
    let mut buf = ParseBuf(p);
    match buf.checked_eat_lenenc_int() {
        Some(n @ 1..=MAX_COLUMNS) if buf.is_empty() => Ok(n),
        _ => Err(Error::protocol(
            "a result set header that is not a column count the canary accepts",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link and the server side of its socket.
    async fn pair() -> (Link, TcpStream) {
        let (client, server) = crate::stores::socket_pair().await;
        (Link::new(client), server)
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_on_the_header() {
        let (mut link, mut server) = pair().await;
        // 16 MiB declared, and bytes streaming after it.
        server.write_all(&[0xFF, 0xFF, 0xFF, 0x00]).await.unwrap();
        server.write_all(&[0u8; 1024]).await.unwrap();
        let mut limit = HANDSHAKE_LIMIT;
        let e = link.read(&mut limit).await.unwrap_err();
        assert!(matches!(e, Error::Protocol(_)), "{e}");
        assert!(e.to_string().contains("a packet of 16777215 bytes"), "{e}");
        assert!(
            link.buf.capacity() <= 2 * READ_CHUNK,
            "nothing of it buffered beyond a read"
        );
    }

    #[tokio::test]
    async fn small_packets_add_up_to_the_reply_limit() {
        let (mut link, mut server) = pair().await;
        tokio::spawn(async move {
            let mut seq = 0u8;
            loop {
                let mut p = vec![0xF0, 0x03, 0x00, seq];
                p.extend_from_slice(&[b'x'; 1008]);
                if server.write_all(&p).await.is_err() {
                    return;
                }
                seq = seq.wrapping_add(1);
            }
        });
        let mut limit = 100_000;
        let mut n = 0;
        let e = loop {
            match link.read(&mut limit).await {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(e, Error::Protocol(_)), "{e}");
        assert_eq!(n, 100_000 / 1012, "packets that fit");
    }

    #[tokio::test]
    async fn the_reader_resolves_the_close_signal_and_ends_with_the_link() {
        let (link, server) = pair().await;
        let (link, mut closed) = link.start_reader();
        drop(server);
        let cause = tokio::time::timeout(std::time::Duration::from_secs(5), closed.closed())
            .await
            .expect("the close is seen at once");
        assert_eq!(cause, DisconnectCause::Closed);
        drop(link);

        // Dropping the link ends the reader: the server sees the socket close.
        let (link, mut server) = pair().await;
        let (link, _closed) = link.start_reader();
        drop(link);
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), server.read(&mut b))
            .await
            .expect("the socket is closed when the link is dropped")
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn an_error_packet_out_of_turn_is_the_servers_parting_word() {
        let (link, mut server) = pair().await;
        let (mut link, _closed) = link.start_reader();
        let mut p = vec![0xFF, 0x87, 0x07, b'#'];
        p.extend_from_slice(b"70100Connection was killed");
        let mut frame = vec![p.len() as u8, 0, 0, 0];
        frame.extend_from_slice(&p);
        server.write_all(&frame).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        match link.ping().await {
            Err(Error::Server(s)) => assert_eq!(s.code, 1927),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_never_panics_the_parsers() {
        use mysql_common::packets::AuthSwitchRequest;
        let mut rng = rand::rng();
        let columns: Arc<[Column]> =
            vec![Column::new(mysql_common::constants::ColumnType::MYSQL_TYPE_STRING); 3].into();
        for len in 0..200 {
            for _ in 0..200 {
                let p: Vec<u8> = (0..len).map(|_| rand::Rng::random(&mut rng)).collect();
                let _ = ParseBuf(&p).parse::<AuthSwitchRequest>(());
                let _ = ParseBuf(&p).parse::<Column>(());
                let _ = ParseBuf(&p).parse::<RowDeserializer<(), Text>>(columns.clone());
                let _ = ParseBuf(&p).parse::<OkPacketDeserializer<CommonOkPacket>>(
                    CapabilityFlags::CLIENT_PROTOCOL_41,
                );
                let _ = ParseBuf(&p).parse::<OkPacketDeserializer<OldEofPacket>>(
                    CapabilityFlags::CLIENT_PROTOCOL_41,
                );
                let _ = server_error(&p);
                let _ = column_count(&p);
            }
        }
    }
}
