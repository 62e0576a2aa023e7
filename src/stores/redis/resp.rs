//! RESP, the Redis protocol (versions 2 and 3), as far as a canary needs
//! it: commands encoded as arrays of bulk strings, and one reply parsed
//! from the front of a buffer under hard limits. A declared length or
//! element count over the limit is refused on its header, before a byte of
//! it is buffered; garbage is a [`ParseError`], never a panic.
//!
//! The parser is restartable rather than incremental: given the bytes so
//! far it either returns a whole reply and how many bytes it took, or how
//! many bytes the buffer must hold before it is worth trying again (the
//! canary's replies are small; a bulk string's declared length is skipped,
//! not scanned).

use std::fmt;

/// What one reply may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of the whole reply.
    pub bytes: usize,
    /// Elements of every aggregate in it together (map entries count twice).
    pub elements: usize,
    /// How deep aggregates may nest.
    pub depth: usize,
}

/// The canary's replies: `INFO` (a few KiB), `HELLO` (a map of 7 entries),
/// Sentinel's answers, a pub/sub message.
pub const REPLY: Limits = Limits {
    bytes: crate::stores::bounded::ROUND_TRIP_BYTES,
    elements: 1024,
    depth: 8,
};

/// The longest line (a simple string, an error, a header) accepted.
const LINE_LIMIT: usize = 64 << 10;
/// The longest server message kept: it ends up in events and the API.
const MESSAGE_LIMIT: usize = 512;

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A null bulk string or array (RESP2), or null (RESP3).
    Nil,
    Int(i64),
    /// A simple, bulk or verbatim string (without the verbatim format), or
    /// the text of a double, boolean or big number.
    Bytes(Vec<u8>),
    /// An error reply (simple or blob).
    Error(ServerError),
    /// An array or a set.
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    /// Out-of-band data (RESP3 `>`): pub/sub messages.
    Push(Vec<Value>),
}

impl Value {
    /// The elements of an array or a push.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }

    /// The text of a string.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// An error reply: its code (the first word, `ERR`, `WRONGPASS`, ...) and
/// the rest of its message (at most [`MESSAGE_LIMIT`] bytes of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: String,
    pub message: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

/// Bytes that are not a reply the canary accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// What the front of a buffer holds.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A whole reply, and the bytes it took.
    Done(Value, usize),
    /// Not yet a whole reply: try again once the buffer holds this many bytes.
    Need(usize),
}

/// Parses one reply from the front of `buf`.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let mut c = Cursor {
        buf,
        pos: 0,
        elements: 0,
        limits,
    };
    match c.value(0) {
        Ok(v) => Ok(Parsed::Done(v, c.pos)),
        Err(Stop::Need(n)) if n > limits.bytes => Err(too_large(n, limits)),
        Err(Stop::Need(n)) => Ok(Parsed::Need(n)),
        Err(Stop::Bad(e)) => Err(e),
    }
}

/// A command: an array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn too_large(n: usize, limits: &Limits) -> ParseError {
    ParseError(format!(
        "the server's reply exceeds the canary's limit: at least {n} bytes, more than {}",
        limits.bytes
    ))
}

/// Why parsing stopped short of a reply.
enum Stop {
    /// The buffer must hold this many bytes.
    Need(usize),
    Bad(ParseError),
}

fn bad(msg: impl Into<String>) -> Stop {
    Stop::Bad(ParseError(msg.into()))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    elements: usize,
    limits: &'a Limits,
}

impl<'a> Cursor<'a> {
    /// The next line, without its CRLF.
    fn line(&mut self) -> Result<&'a [u8], Stop> {
        let rest = &self.buf[self.pos..];
        let window = &rest[..rest.len().min(LINE_LIMIT + 2)];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) if i > 0 && rest[i - 1] == b'\r' => {
                self.pos += i + 1;
                Ok(&rest[..i - 1])
            }
            Some(_) => Err(bad("a line not ended by CRLF")),
            None if window.len() > LINE_LIMIT => {
                Err(bad(format!("a line of more than {LINE_LIMIT} bytes")))
            }
            None => Err(Stop::Need(self.buf.len() + 1)),
        }
    }

    /// The line as a signed decimal number.
    fn number(&mut self) -> Result<i64, Stop> {
        let line = self.line()?;
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("a length or integer that is not a number"))
    }

    /// A declared length or count: -1 (null) as `None`.
    fn length(&mut self, what: &str, max: usize) -> Result<Option<usize>, Stop> {
        match self.number()? {
            -1 => Ok(None),
            n if n < 0 => Err(bad(format!("a negative {what}"))),
            n if n as u64 > max as u64 => Err(bad(format!(
                "the server's reply exceeds the canary's limit: {what} {n}, more than {max}"
            ))),
            n => Ok(Some(n as usize)),
        }
    }

    /// `n` bytes and their CRLF.
    fn blob(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let end = self.pos + n + 2;
        if end > self.limits.bytes {
            return Err(Stop::Bad(too_large(end, self.limits)));
        }
        if self.buf.len() < end {
            return Err(Stop::Need(end));
        }
        if &self.buf[end - 2..end] != b"\r\n" {
            return Err(bad("a string not ended by CRLF"));
        }
        let b = &self.buf[self.pos..end - 2];
        self.pos = end;
        Ok(b)
    }

    /// Counts `n` more elements against the limit.
    fn count(&mut self, n: usize) -> Result<(), Stop> {
        self.elements += n;
        if self.elements > self.limits.elements {
            return Err(bad(format!(
                "the server's reply exceeds the canary's limit: more than {} elements",
                self.limits.elements
            )));
        }
        Ok(())
    }

    fn items(&mut self, n: usize, depth: usize) -> Result<Vec<Value>, Stop> {
        self.count(n)?;
        (0..n).map(|_| self.value(depth + 1)).collect()
    }

    fn pairs(&mut self, depth: usize) -> Result<Vec<(Value, Value)>, Stop> {
        let n = self
            .length("a map of", self.limits.elements / 2)?
            .unwrap_or(0);
        self.count(2 * n)?;
        (0..n)
            .map(|_| Ok((self.value(depth + 1)?, self.value(depth + 1)?)))
            .collect()
    }

    fn value(&mut self, depth: usize) -> Result<Value, Stop> {
        if depth > self.limits.depth {
            return Err(bad(format!(
                "aggregates nested more than {} deep",
                self.limits.depth
            )));
        }
        let Some(&kind) = self.buf.get(self.pos) else {
            return Err(Stop::Need(self.pos + 1));
        };
        let start = self.pos;
        self.pos += 1;
        let max = self.limits.bytes;
        let v = match kind {
            b'+' | b',' | b'(' | b'#' => Value::Bytes(self.line()?.to_vec()),
            b'-' => Value::Error(server_error(self.line()?)),
            b':' => Value::Int(self.number()?),
            b'_' => {
                self.line()?;
                Value::Nil
            }
            b'$' => match self.length("a string of", max)? {
                Some(n) => Value::Bytes(self.blob(n)?.to_vec()),
                None => Value::Nil,
            },
            b'!' => {
                let n = self.length("an error of", max)?.unwrap_or(0);
                Value::Error(server_error(self.blob(n)?))
            }
            b'=' => {
                let n = self.length("a string of", max)?.unwrap_or(0);
                let b = self.blob(n)?;
                // `txt:` or `mkd:` before the text.
                Value::Bytes(b.get(4..).unwrap_or_default().to_vec())
            }
            b'*' | b'~' | b'>' => {
                let n = self.length("an array of", self.limits.elements)?;
                match n {
                    None => Value::Nil,
                    Some(n) if kind == b'>' => Value::Push(self.items(n, depth)?),
                    Some(n) => Value::Array(self.items(n, depth)?),
                }
            }
            b'%' => Value::Map(self.pairs(depth)?),
            b'|' => {
                // Attributes describe the reply that follows: skipped.
                self.pairs(depth)?;
                return self.value(depth);
            }
            other => {
                self.pos = start;
                return Err(bad(format!(
                    "a reply starting with byte 0x{other:02x}, which is not RESP"
                )));
            }
        };
        Ok(v)
    }
}

/// An error line: its code and (bounded) message.
fn server_error(line: &[u8]) -> ServerError {
    let text = String::from_utf8_lossy(line);
    let (code, message) = text.split_once(' ').unwrap_or((&text, ""));
    ServerError {
        code: code.chars().take(32).collect(),
        message: crate::stores::bounded_message(message.to_string(), MESSAGE_LIMIT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> Value {
        match parse(buf, &REPLY).unwrap() {
            Parsed::Done(v, n) => {
                assert_eq!(n, buf.len(), "the whole reply taken");
                v
            }
            other => panic!("{other:?}"),
        }
    }

    fn bytes(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_every_reply_kind_the_canary_meets() {
        assert_eq!(done(b"+PONG\r\n"), bytes("PONG"));
        assert_eq!(done(b":42\r\n"), Value::Int(42));
        assert_eq!(done(b"$5\r\nhello\r\n"), bytes("hello"));
        assert_eq!(done(b"$-1\r\n"), Value::Nil);
        assert_eq!(done(b"*-1\r\n"), Value::Nil);
        assert_eq!(done(b"_\r\n"), Value::Nil);
        assert_eq!(done(b"=8\r\ntxt:a:b\n\r\n"), bytes("a:b\n"));
        assert_eq!(
            done(b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n"),
            Value::Array(vec![bytes("127.0.0.1"), bytes("6379")])
        );
        assert_eq!(
            done(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n"),
            Value::Push(vec![bytes("message"), bytes("c"), bytes("p")])
        );
        assert_eq!(
            done(b"%2\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n"),
            Value::Map(vec![
                (bytes("server"), bytes("redis")),
                (bytes("proto"), Value::Int(3))
            ])
        );
        assert_eq!(
            done(b"|1\r\n+ttl\r\n:3\r\n+OK\r\n"),
            bytes("OK"),
            "attributes are skipped"
        );
        assert_eq!(
            done(b"-WRONGPASS invalid username-password pair\r\n"),
            Value::Error(ServerError {
                code: "WRONGPASS".into(),
                message: "invalid username-password pair".into()
            })
        );
        assert_eq!(
            done(b"!9\r\nERR oops!\r\n"),
            Value::Error(ServerError {
                code: "ERR".into(),
                message: "oops!".into()
            })
        );
    }

    #[test]
    fn a_partial_reply_says_how_much_more_it_needs() {
        let whole = b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n";
        for cut in 0..whole.len() {
            match parse(&whole[..cut], &REPLY).unwrap() {
                Parsed::Need(n) => assert!(n > cut && n <= whole.len(), "{cut}: {n}"),
                other => panic!("{cut}: {other:?}"),
            }
        }
        // A bulk string's declared length is waited for, not scanned.
        assert_eq!(
            parse(b"$1000\r\nabc", &REPLY).unwrap(),
            Parsed::Need(7 + 1002)
        );
        // Two replies: the first is taken, the second left.
        assert_eq!(
            parse(b"+OK\r\n:1\r\n", &REPLY).unwrap(),
            Parsed::Done(bytes("OK"), 5)
        );
    }

    #[test]
    fn oversized_declarations_are_refused_on_their_header() {
        for hostile in [
            &b"$536870912\r\n"[..],
            b"*100000000\r\n",
            b"%100000000\r\n",
            b"=536870912\r\n",
        ] {
            let e = parse(hostile, &REPLY).unwrap_err();
            assert!(e.0.contains("exceeds the canary's limit"), "{e}");
        }
        let limits = Limits {
            bytes: 100,
            elements: 10,
            depth: 2,
        };
        // Many small elements add up to the element limit.
        assert!(parse(b"*6\r\n*6\r\n:1\r\n", &limits).is_err());
        // Nesting beyond the depth.
        assert!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", &limits).is_err());
        // A reply still incomplete past the byte limit.
        let long = format!("+{}", "x".repeat(200));
        assert!(parse(long.as_bytes(), &limits).is_err());
        // An endless line.
        let endless = vec![b'x'; LINE_LIMIT + 10];
        let mut line = b"+".to_vec();
        line.extend_from_slice(&endless);
        assert!(parse(&line, &REPLY).is_err());
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for g in [
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            b"$abc\r\n",
            b"$-5\r\n",
            b"$3\r\nabcde\r\n",
            b"+OK\n",
            b":12x\r\n",
        ] {
            assert!(
                parse(g, &REPLY).is_err(),
                "{:?}",
                String::from_utf8_lossy(g)
            );
        }
        let mut rng = rand::rng();
        for len in 0..100 {
            for _ in 0..300 {
                let mut g: Vec<u8> = (0..len).map(|_| rand::Rng::random(&mut rng)).collect();
                if let Some(first) = g.first_mut() {
                    // Mostly valid type bytes, to reach deeper.
                    *first = b"+-:$*%~>|_=!#,("[(*first as usize) % 15];
                }
                let _ = parse(&g, &REPLY);
            }
        }
    }

    #[test]
    fn error_messages_are_bounded() {
        let long = format!("-ERR {}\r\n", "é".repeat(1000));
        let Value::Error(e) = done(long.as_bytes()) else {
            panic!()
        };
        assert!(e.message.len() <= MESSAGE_LIMIT + 3, "{}", e.message.len());
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            command(&[b"CLIENT", b"SETNAME", b"dbcanary:a"]),
            b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$10\r\ndbcanary:a\r\n"
        );
    }
}
