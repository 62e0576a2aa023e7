//! What an `http` target's answer must look like: accepted statuses, a text
//! the body must contain, and extra request headers.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// One accepted status: an exact code or a whole class (`2xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    /// The hundreds digit: `2` for `2xx`.
    Class(u16),
}

impl StatusMatch {
    pub fn matches(self, status: u16) -> bool {
        match self {
            Self::Code(c) => status == c,
            Self::Class(c) => status / 100 == c,
        }
    }
}

impl fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(c) => write!(f, "{c}"),
            Self::Class(c) => write!(f, "{c}xx"),
        }
    }
}

/// The checks of an `http` target. `Debug` never shows header values (they
/// may hold tokens).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// Accepted statuses; any 2xx unless configured.
    pub expected_status: Vec<StatusMatch>,
    /// Text the body must contain (the first [`BODY_LIMIT`] bytes are read).
    pub body_contains: Option<String>,
    /// Extra request headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
}

/// How much of a body is read to look for `body_contains`.
pub const BODY_LIMIT: usize = 1 << 20;

impl Default for HttpCheck {
    fn default() -> Self {
        Self {
            expected_status: vec![StatusMatch::Class(2)],
            body_contains: None,
            headers: BTreeMap::new(),
        }
    }
}

impl HttpCheck {
    /// Whether `status` is accepted.
    pub fn status_ok(&self, status: u16) -> bool {
        self.expected_status.iter().any(|m| m.matches(status))
    }

    /// The accepted statuses as written in the config: `2xx, 301`.
    pub fn expected(&self) -> String {
        self.expected_status
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Debug for HttpCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCheck")
            .field("expected_status", &self.expected())
            .field("body_contains", &self.body_contains)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `expected_status` as written: one status or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawStatuses {
    One(RawStatus),
    Many(Vec<RawStatus>),
}

/// `200` or `"200"` or `"2xx"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawStatus {
    Code(i64),
    Text(String),
}

/// The raw `http` keys of a target.
pub(super) struct RawHttp<'a> {
    pub expected_status: Option<&'a RawStatuses>,
    pub body_contains: Option<&'a str>,
    pub headers: Option<&'a BTreeMap<String, String>>,
}

impl RawHttp<'_> {
    /// The first key given, for refusing them on targets that are not apps.
    pub fn first_key(&self) -> Option<&'static str> {
        if self.expected_status.is_some() {
            Some("expected_status")
        } else if self.body_contains.is_some() {
            Some("body_contains")
        } else if self.headers.is_some() {
            Some("headers")
        } else {
            None
        }
    }
}

/// Validates the raw keys; errors are `(key suffix, reason)`.
pub(super) fn validate(raw: &RawHttp<'_>) -> Result<HttpCheck, (String, String)> {
    let mut check = HttpCheck::default();
    if let Some(s) = raw.expected_status {
        let list: Vec<&RawStatus> = match s {
            RawStatuses::One(one) => vec![one],
            RawStatuses::Many(many) => many.iter().collect(),
        };
        if list.is_empty() {
            return Err((
                "expected_status".into(),
                "must list at least one status".into(),
            ));
        }
        check.expected_status = list
            .into_iter()
            .map(status)
            .collect::<Result<_, _>>()
            .map_err(|r| ("expected_status".to_string(), r))?;
    }
    if let Some(b) = raw.body_contains {
        if b.is_empty() {
            return Err((
                "body_contains".into(),
                "must not be empty (leave it out to accept any body)".into(),
            ));
        }
        check.body_contains = Some(b.to_string());
    }
    if let Some(h) = raw.headers {
        for (name, value) in h {
            let key = format!("headers.{name}");
            let parsed = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| (key.clone(), format!("{name:?} is not a valid header name")))?;
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                return Err((
                    key,
                    "the value is not a valid header value (control characters or non-ASCII)"
                        .into(),
                ));
            }
            check
                .headers
                .insert(parsed.as_str().to_string(), value.clone());
        }
    }
    Ok(check)
}

fn status(s: &RawStatus) -> Result<StatusMatch, String> {
    let code = |c: i64| {
        u16::try_from(c)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .map(StatusMatch::Code)
            .ok_or_else(|| format!("{c} is not an HTTP status (100 to 599)"))
    };
    match s {
        RawStatus::Code(c) => code(*c),
        RawStatus::Text(t) => {
            let t = t.trim();
            let bad =
                || format!("{t:?} is not a status: use a code like 200 or a class like \"2xx\"");
            match t.to_ascii_lowercase().strip_suffix("xx") {
                Some(d) => match d.as_bytes() {
                    [c @ b'1'..=b'5'] => Ok(StatusMatch::Class(u16::from(c - b'0'))),
                    _ => Err(bad()),
                },
                None => code(t.parse::<i64>().map_err(|_| bad())?),
            }
        }
    }
}
