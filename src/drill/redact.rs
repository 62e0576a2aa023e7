//! The planted-password rule for everything a drill prints: the report
//! quotes error messages, server answers and the output of a user's command,
//! any of which may carry a password of the targets (a script that echoes
//! its `redis-cli -a`, a driver message with a URL). Every text goes through
//! [`Secrets::scrub`] before it enters a report.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::config::Target;
use crate::dburl::{DbUrl, redact_text};
use crate::stores::Options;

/// The secrets of a drill's targets, longest first (so that a password
/// containing another is masked whole).
#[derive(Debug, Clone, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The passwords, secret query values and header values of `targets`
    /// and of the extra URLs (the drill credential).
    pub fn of(targets: &[&Target], urls: &[&DbUrl]) -> Self {
        let mut found = Vec::new();
        let mut url_secrets = |u: &DbUrl| {
            found.extend(u.password().map(str::to_string));
            for key in ["sentinel_password", "password", "token"] {
                found.extend(u.query_param(key));
            }
        };
        for t in targets {
            url_secrets(&t.url);
        }
        for u in urls {
            url_secrets(u);
        }
        for t in targets {
            if let Options::Http(check) = &t.options {
                found.extend(check.headers.values().cloned());
            }
        }
        let mut all: Vec<String> = found
            .into_iter()
            .filter(|s| !s.is_empty())
            .flat_map(|s| {
                let encoded = utf8_percent_encode(&s, NON_ALPHANUMERIC).to_string();
                [s, encoded]
            })
            .collect();
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Self(all)
    }

    /// `text` with every URL credential and every known secret masked: for
    /// free text from outside (messages, a command's output).
    pub fn scrub(&self, text: &str) -> String {
        self.mask(&redact_text(text))
    }

    /// `text` with every known secret masked, and nothing else changed: the
    /// last pass over the text report, which the line-wise URL and
    /// `key = value` redaction could garble.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.0 {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }

    /// Every string of a JSON value masked (keys and numbers untouched, so
    /// the JSON stays what it was, even with a password like `1`).
    pub fn mask_json(&self, v: &mut serde_json::Value) {
        use serde_json::Value;
        match v {
            Value::String(s) => *s = self.mask(s),
            Value::Array(a) => a.iter_mut().for_each(|x| self.mask_json(x)),
            Value::Object(o) => o.values_mut().for_each(|x| self.mask_json(x)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetSource;
    use crate::settings::CanarySettings;

    fn target(url: &str) -> Target {
        Target::from_url(
            "t".into(),
            DbUrl::parse(url).unwrap(),
            CanarySettings::default(),
            TargetSource::CommandLine,
        )
        .unwrap()
    }

    #[test]
    fn every_known_secret_is_masked_wherever_it_appears() {
        let store =
            target("redis+sentinel://:s3cret@127.0.0.1:26379/m?sentinel_password=sent%21nel");
        let drill = DbUrl::parse("redis+sentinel://admin:dr1ll@127.0.0.1:26379/m").unwrap();
        let s = Secrets::of(&[&store], &[&drill]);
        let text = "AUTH s3cret failed; sentinel sent!nel; url redis://admin:dr1ll@h:1 and dr1ll again, encoded sent%21nel";
        let out = s.scrub(text);
        for planted in ["s3cret", "sent!nel", "dr1ll", "sent%21nel"] {
            assert!(!out.contains(planted), "{planted} in {out}");
        }
        assert!(out.contains("redis://admin:***@h:1"), "{out}");
    }

    #[test]
    fn json_stays_json_whatever_the_password() {
        let s = Secrets::of(&[], &[&DbUrl::parse("redis://:1@h:6379").unwrap()]);
        let mut v = serde_json::json!({"exit_code": 1, "detail": "AUTH 1 failed", "list": ["x1"]});
        s.mask_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"exit_code": 1, "detail": "AUTH *** failed", "list": ["x***"]})
        );
    }
}
