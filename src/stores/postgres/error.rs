//! Driver errors, classified by SQLSTATE and by type into attempt results
//! and disconnect causes; messages never hold a credential.

use tokio_postgres::Error;
use tokio_postgres::error::SqlState;

use crate::model::{ConnectResult, DisconnectCause};
use crate::stores::{ConnectError, ProbeError, classify_io, disconnect_cause};
use crate::tls::{find_io_error, is_tls_error};

/// The error as one readable line: the driver's kind and the server's
/// message (`FATAL: password authentication failed for user "x"`). Never
/// holds a password: neither the driver nor the server repeats it.
fn message(e: &Error) -> String {
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {}", src.to_string().replace('\n', " ")),
        None => e.to_string(),
    }
}

/// The attempt result for a server error during connection set-up.
pub(super) fn sqlstate_result(code: &SqlState) -> ConnectResult {
    if code.code().starts_with("28")
        || [
            SqlState::INVALID_CATALOG_NAME,
            SqlState::INSUFFICIENT_PRIVILEGE,
        ]
        .contains(code)
    {
        // Bad password, unknown role, no pg_hba.conf entry (class 28),
        // unknown database, no CONNECT privilege on it.
        return ConnectResult::Auth;
    }
    if [
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
    ]
    .contains(code)
    {
        // Starting up, shutting down, in recovery without hot standby, out
        // of connection slots: the server is there but does not serve yet.
        return ConnectResult::NotReady;
    }
    ConnectResult::Protocol
}

/// Classifies a driver error during connection set-up: by SQLSTATE for the
/// server's errors, by type for I/O and TLS. tokio-postgres keeps its error
/// kinds private and displays each as a fixed name (never server text), so
/// that name is the only way left to tell its authentication errors
/// (including "password missing", a configuration error to the driver)
/// and a server that refuses TLS under `sslmode=require`.
pub fn connect_error(e: &Error) -> ConnectError {
    let result = if let Some(code) = e.code() {
        sqlstate_result(code)
    } else if is_tls_error(e) {
        ConnectResult::Tls
    } else if let Some(io) = find_io_error(e) {
        classify_io(io)
    } else if e.is_closed() {
        ConnectResult::Io
    } else {
        match e.to_string().as_str() {
            "authentication error" | "invalid configuration" => ConnectResult::Auth,
            "error performing TLS handshake" => ConnectResult::Tls,
            "timeout waiting for server" => ConnectResult::Timeout,
            _ => ConnectResult::Protocol,
        }
    };
    ConnectError::new(result, message(e))
}

/// The disconnect cause for an error on an established connection: a
/// server that says goodbye (`FATAL`, e.g. `pg_terminate_backend` or a
/// shutdown) and then closes, or simply closes, is `closed`.
pub(super) fn cause_of(e: &Error) -> DisconnectCause {
    if e.is_closed() {
        return DisconnectCause::Closed;
    }
    if let Some(db) = e.as_db_error() {
        return if matches!(db.severity(), "FATAL" | "PANIC")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(db.code())
        {
            DisconnectCause::Closed
        } else {
            DisconnectCause::Error
        };
    }
    match find_io_error(e) {
        Some(io) => disconnect_cause(io),
        None => DisconnectCause::Error,
    }
}

/// Classifies a driver error on a live connection.
pub fn probe_error(e: &Error) -> ProbeError {
    ProbeError::new(cause_of(e), message(e))
}
