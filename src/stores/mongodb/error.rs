//! Driver errors, classified by kind and server code into attempt results
//! and disconnect causes.

use mongodb::error::{Error as DriverError, ErrorKind};

use crate::model::{ConnectResult, DisconnectCause};
use crate::stores::{classify_io, disconnect_cause};

/// Server error codes that mean "answering, but not serving as primary yet"
/// (ShutdownInProgress, PrimarySteppedDown, NotWritablePrimary,
/// InterruptedAtShutdown, InterruptedDueToReplStateChange,
/// NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary).
const NOT_READY_CODES: [i32; 7] = [91, 189, 10107, 11600, 11602, 13435, 13436];
/// Unauthorized, AuthenticationFailed.
const AUTH_CODES: [i32; 2] = [13, 18];

/// The attempt result for a driver error, decided by its kind and code.
pub(super) fn driver_result(e: &DriverError) -> (ConnectResult, String) {
    let result = match &*e.kind {
        ErrorKind::Authentication { .. } => ConnectResult::Auth,
        ErrorKind::DnsResolve { .. } => ConnectResult::Dns,
        ErrorKind::InvalidTlsConfig { .. } => ConnectResult::Tls,
        ErrorKind::Io(io) => classify_io(io),
        ErrorKind::ServerSelection { .. } => ConnectResult::NotReady,
        ErrorKind::ConnectionPoolCleared { .. } => ConnectResult::Io,
        ErrorKind::Command(c) if AUTH_CODES.contains(&c.code) => ConnectResult::Auth,
        ErrorKind::Command(c) if NOT_READY_CODES.contains(&c.code) => ConnectResult::NotReady,
        _ => ConnectResult::Protocol,
    };
    (result, e.kind.to_string())
}

/// The disconnect cause for a driver error on a live client.
pub(super) fn driver_cause(e: &DriverError) -> DisconnectCause {
    match &*e.kind {
        ErrorKind::Io(io) => disconnect_cause(io),
        ErrorKind::ServerSelection { .. } => DisconnectCause::Timeout,
        ErrorKind::ConnectionPoolCleared { .. } => DisconnectCause::Closed,
        _ => DisconnectCause::Error,
    }
}
