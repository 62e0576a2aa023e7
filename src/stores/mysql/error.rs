//! What can go wrong on a MySQL/MariaDB canary connection, and the bounded
//! kinds the canary counts it as: by error type, and for the server's own
//! errors by their code, never by the text of a message.

use std::fmt;
use std::io;

use crate::model::{ConnectResult, DisconnectCause};
use crate::stores::{ConnectError, ProbeError, classify_io, disconnect_cause};
use crate::tls::is_tls_error;

/// Server error codes the canary tells apart (same numbers on MySQL and
/// MariaDB unless noted).
pub mod code {
    pub const CON_COUNT: u16 = 1040; // ER_CON_COUNT_ERROR: too many connections
    pub const DBACCESS_DENIED: u16 = 1044;
    pub const ACCESS_DENIED: u16 = 1045;
    pub const BAD_DB: u16 = 1049;
    pub const SERVER_SHUTDOWN: u16 = 1053;
    pub const PARSE_ERROR: u16 = 1064;
    pub const HOST_IS_BLOCKED: u16 = 1129;
    pub const HOST_NOT_PRIVILEGED: u16 = 1130;
    pub const TOO_MANY_USER_CONNECTIONS: u16 = 1203; // global max_user_connections
    pub const USER_LIMIT_REACHED: u16 = 1226; // the account's MAX_USER_CONNECTIONS
    pub const SPECIFIC_ACCESS_DENIED: u16 = 1227;
    pub const NOT_SUPPORTED_AUTH_MODE: u16 = 1251;
    pub const ACCESS_DENIED_NO_PASSWORD: u16 = 1698;
    pub const CONNECTION_KILLED: u16 = 1927; // MariaDB
    pub const SERVER_OFFLINE_MODE: u16 = 3032; // MySQL
    pub const ACCOUNT_LOCKED_MYSQL: u16 = 3118; // MySQL ER_ACCOUNT_HAS_BEEN_LOCKED
    pub const SECURE_TRANSPORT_REQUIRED: u16 = 3159; // MySQL
    pub const CLIENT_INTERACTION_TIMEOUT: u16 = 4031; // MySQL: wait_timeout, then closed
    pub const USER_IS_BLOCKED: u16 = 4150; // MariaDB
    pub const ACCOUNT_LOCKED_MARIADB: u16 = 4151; // MariaDB
}

/// An error packet of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: u16,
    /// The SQLSTATE, when the server sent one (not before the handshake).
    pub state: Option<String>,
    pub message: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            Some(state) => write!(f, "ERROR {} ({state}): {}", self.code, self.message),
            None => write!(f, "ERROR {}: {}", self.code, self.message),
        }
    }
}

/// A failure on a canary connection. Never holds a password: neither the
/// server's messages nor the canary's own repeat one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The transport failed (TCP, or TLS: a rustls error inside), or the
    /// server closed the connection (`UnexpectedEof`).
    #[error("{}", io_message(.0))]
    Io(#[from] io::Error),
    /// The server answered with an error packet.
    #[error("{0}")]
    Server(ServerError),
    /// The server's bytes are not the protocol, or exceed the canary's
    /// limits (a hostile or confused peer).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// TLS the mode requires cannot be had (the server offers none, or the
    /// configuration does not load).
    #[error("{0}")]
    Tls(String),
    /// An authentication exchange the canary does not perform.
    #[error("{0}")]
    Auth(String),
}

fn io_message(e: &io::Error) -> String {
    if is_tls_error(e) {
        format!("TLS: {e}")
    } else {
        e.to_string()
    }
}

impl Error {
    /// A protocol error.
    pub fn protocol(what: impl Into<String>) -> Self {
        Self::Protocol(what.into())
    }

    /// The server closed the connection.
    pub fn eof() -> Self {
        Self::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ))
    }
}

/// Classifies an error during connection set-up by its type and, for
/// server errors, by the error code.
pub fn connect_error(e: &Error) -> ConnectError {
    let result = match e {
        Error::Io(io) => classify_io(io),
        Error::Server(s) => server_result(s.code),
        Error::Protocol(_) => ConnectResult::Protocol,
        Error::Tls(_) => ConnectResult::Tls,
        Error::Auth(_) => ConnectResult::Auth,
    };
    ConnectError::new(result, e.to_string())
}

/// The attempt result of a server error code during connection set-up.
pub fn server_result(code: u16) -> ConnectResult {
    match code {
        code::ACCESS_DENIED
        | code::ACCESS_DENIED_NO_PASSWORD
        | code::DBACCESS_DENIED
        | code::BAD_DB
        | code::HOST_NOT_PRIVILEGED
        | code::HOST_IS_BLOCKED
        | code::NOT_SUPPORTED_AUTH_MODE
        | code::SPECIFIC_ACCESS_DENIED
        | code::ACCOUNT_LOCKED_MYSQL
        | code::ACCOUNT_LOCKED_MARIADB
        | code::USER_IS_BLOCKED => ConnectResult::Auth,
        c if is_too_many(c) => ConnectResult::NotReady,
        code::SERVER_SHUTDOWN | code::SERVER_OFFLINE_MODE | code::CONNECTION_KILLED => {
            ConnectResult::NotReady
        }
        code::SECURE_TRANSPORT_REQUIRED => ConnectResult::Tls,
        _ => ConnectResult::Protocol,
    }
}

/// Whether a server error is a connection limit ("too many connections"
/// for the server, the user or the account): the server is there but
/// refuses more connections for now.
pub fn is_too_many(code: u16) -> bool {
    matches!(
        code,
        code::CON_COUNT | code::TOO_MANY_USER_CONNECTIONS | code::USER_LIMIT_REACHED
    )
}

/// Classifies an error on a live connection.
pub fn probe_error(e: &Error) -> ProbeError {
    let cause = match e {
        Error::Io(io) => disconnect_cause(io),
        // The server says goodbye with an error packet, then closes.
        Error::Server(s)
            if matches!(
                s.code,
                code::CONNECTION_KILLED | code::SERVER_SHUTDOWN | code::CLIENT_INTERACTION_TIMEOUT
            ) =>
        {
            DisconnectCause::Closed
        }
        _ => DisconnectCause::Error,
    };
    ProbeError::new(cause, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16) -> Error {
        Error::Server(ServerError {
            code,
            state: Some("HY000".into()),
            message: "m".into(),
        })
    }

    #[test]
    fn server_errors_are_classified_by_code() {
        let s = |code| connect_error(&server(code)).result;
        assert_eq!(s(1045), ConnectResult::Auth);
        assert_eq!(s(1040), ConnectResult::NotReady);
        assert_eq!(s(1226), ConnectResult::NotReady);
        assert_eq!(s(3159), ConnectResult::Tls);
        assert_eq!(s(1053), ConnectResult::NotReady);
        assert_eq!(s(1064), ConnectResult::Protocol);
        assert_eq!(probe_error(&server(1927)).cause, DisconnectCause::Closed);
        assert_eq!(probe_error(&server(1064)).cause, DisconnectCause::Error);
        assert_eq!(
            server(1045).to_string(),
            "ERROR 1045 (HY000): m",
            "the server's own words, as the mysql client shows them"
        );
    }

    #[test]
    fn transport_and_protocol_errors_are_classified_by_type() {
        let refused = Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(connect_error(&refused).result, ConnectResult::Refused);
        assert_eq!(probe_error(&Error::eof()).cause, DisconnectCause::Closed);
        assert_eq!(connect_error(&Error::eof()).result, ConnectResult::Io);
        let reset = Error::Io(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(probe_error(&reset).cause, DisconnectCause::Reset);
        let tls = Error::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert_eq!(connect_error(&tls).result, ConnectResult::Tls);
        assert!(tls.to_string().starts_with("TLS: "), "{tls}");
        let garbage = Error::protocol("a packet of 16777215 bytes");
        assert_eq!(connect_error(&garbage).result, ConnectResult::Protocol);
        assert_eq!(probe_error(&garbage).cause, DisconnectCause::Error);
        let offered = Error::Tls("no TLS".into());
        assert_eq!(connect_error(&offered).result, ConnectResult::Tls);
        let plugin = Error::Auth("client_ed25519".into());
        assert_eq!(connect_error(&plugin).result, ConnectResult::Auth);
    }
}
