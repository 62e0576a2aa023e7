//! What an `http` target's answer must look like: accepted statuses, a text
//! the body must contain, and extra request headers.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::stores::http::{HttpCheck, StatusMatch};

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
