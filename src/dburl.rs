//! Database URLs as stores write them, several hosts included
//! (`redis+sentinel://h1:26379,h2:26379/mymaster`, `mongodb://a,b/?replicaSet=rs0`),
//! which `url::Url` cannot hold. The password lives only here: everything
//! that is printed goes through [`DbUrl::redacted`].

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Characters escaped in a URL's user-info part.
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The longest URL accepted: no store URL needs more, and a bounded length
/// keeps every message and request about it bounded.
pub const MAX_URL_LEN: usize = 4096;

/// One `host:port` of a URL.
#[derive(Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A parsed database URL. `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    pub scheme: String,
    /// Decoded user name.
    pub username: Option<String>,
    /// Decoded password.
    password: Option<String>,
    pub hosts: Vec<HostPort>,
    /// Path without the leading `/` (database, Sentinel master name...).
    pub path: String,
    /// Query string without the `?`.
    pub query: Option<String>,
    /// Fragment without the `#` (redis-rs reads `#insecure`).
    pub fragment: Option<String>,
}

/// Why a URL was refused. Never contains the URL itself (it may hold a
/// password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

impl DbUrl {
    /// Parses `scheme://[user[:password]@]host[:port][,host[:port]...][/path][?query][#fragment]`.
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let s = s.trim();
        if s.len() > MAX_URL_LEN {
            return Err(UrlError(format!(
                "the URL is longer than {MAX_URL_LEN} characters"
            )));
        }
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| UrlError("not a URL (expected scheme://host)".into()))?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(UrlError("invalid URL scheme".into()));
        }
        let scheme = scheme.to_ascii_lowercase();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hostlist) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (ui, None),
                };
                let u = decode(u)?;
                let p = p.map(decode).transpose()?;
                ((!u.is_empty()).then_some(u), p)
            }
        };
        let default_port = default_port(&scheme);
        let mut hosts = Vec::new();
        for part in hostlist.split(',') {
            hosts.push(parse_host(part, default_port)?);
        }
        let (tail, fragment) = match tail.split_once('#') {
            Some((t, f)) => (t, Some(f.to_string())),
            None => (tail, None),
        };
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (tail, None),
        };
        Ok(Self {
            scheme,
            username,
            password,
            hosts,
            path: path.trim_start_matches('/').to_string(),
            query: query.filter(|q| !q.is_empty()),
            fragment: fragment.filter(|f| !f.is_empty()),
        })
    }

    /// The decoded password, for the driver only.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Replaces the password (from a `password_file`).
    pub fn set_password(&mut self, password: Option<String>) {
        self.password = password;
    }

    /// Whether the URL carries a password.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// The first host.
    pub fn first_host(&self) -> &HostPort {
        &self.hosts[0]
    }

    /// `host:port[,host:port]`: what logs and labels may show of the endpoint.
    pub fn endpoint(&self) -> String {
        self.hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        self.render(self.password.as_ref().map(|_| "***"), &self.hosts, true)
    }

    /// The full URL, password included, for a driver, with `hosts` in place
    /// of the URL's own hosts.
    pub fn expose_with_hosts(&self, hosts: &[HostPort]) -> String {
        let pw = self
            .password
            .as_ref()
            .map(|p| utf8_percent_encode(p, USERINFO).to_string());
        self.render(pw.as_deref(), hosts, false)
    }

    /// The full URL, password included, for a driver.
    pub fn expose(&self) -> String {
        self.expose_with_hosts(&self.hosts)
    }

    fn render(&self, password: Option<&str>, hosts: &[HostPort], redact: bool) -> String {
        let mut out = format!("{}://", self.scheme);
        if self.username.is_some() || password.is_some() {
            if let Some(u) = &self.username {
                out.push_str(&utf8_percent_encode(u, USERINFO).to_string());
            }
            if let Some(p) = password {
                out.push(':');
                out.push_str(p);
            }
            out.push('@');
        }
        out.push_str(
            &hosts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        if !self.path.is_empty() {
            out.push('/');
            out.push_str(&self.path);
        }
        if let Some(q) = &self.query {
            if self.path.is_empty() {
                out.push('/');
            }
            out.push('?');
            if redact {
                out.push_str(&redact_query(q));
            } else {
                out.push_str(q);
            }
        }
        if let Some(f) = &self.fragment {
            out.push('#');
            out.push_str(f);
        }
        out
    }

    /// The value of a query parameter.
    pub fn query_param(&self, key: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({})", self.redacted())
    }
}

/// Masks the values of query parameters that carry secrets
/// (`sentinel_password=...`, `token=...`).
fn redact_query(q: &str) -> String {
    q.split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A text that may quote URLs or `key = value` lines (a configuration
/// parser's message showing the source line) with every credential masked:
/// URL passwords, secret-looking query parameters, and the values of
/// secret-looking keys.
pub fn redact_text(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| redact_line(&redact_urls(line)))
        .collect()
}

/// Masks the password and secret query values of every `scheme://...` in a
/// text.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || "\"'<>`".contains(c))
            .unwrap_or(tail.len());
        let (url, after) = tail.split_at(end);
        let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        let (authority, path) = url.split_at(authority_end);
        match authority.rfind('@') {
            Some(at) => {
                let (userinfo, hosts) = authority.split_at(at);
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(hosts);
            }
            None => out.push_str(authority),
        }
        match path.split_once('?') {
            Some((p, q)) => {
                let (q, frag) = match q.split_once('#') {
                    Some((q, f)) => (q, Some(f)),
                    None => (q, None),
                };
                out.push_str(p);
                out.push('?');
                out.push_str(&redact_query(q));
                if let Some(f) = frag {
                    out.push('#');
                    out.push_str(f);
                }
            }
            None => out.push_str(path),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Masks the value of a `key = value` (TOML) or `key: value` (YAML) line
/// whose key looks secret.
fn redact_line(line: &str) -> String {
    let split = line.find('=').or_else(|| line.find(": "));
    match split {
        Some(i) if is_secret_key(&line[..i]) => {
            let newline = if line.ends_with('\n') { "\n" } else { "" };
            format!("{}{} ***{newline}", &line[..i], &line[i..=i])
        }
        _ => line.to_string(),
    }
}

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    // "pasw" catches a misspelling (`sentinel_pasword`).
    ["pass", "pasw", "pwd", "secret", "token", "credential"]
        .iter()
        .any(|s| k.contains(s))
}

fn decode(s: &str) -> Result<String, UrlError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| UrlError("user info is not valid UTF-8 after percent-decoding".into()))
}

fn parse_host(part: &str, default_port: u16) -> Result<HostPort, UrlError> {
    if part.is_empty() {
        return Err(UrlError("empty host".into()));
    }
    let (host, port) = if let Some(rest) = part.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| UrlError("unclosed '[' in IPv6 host".into()))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UrlError("junk after IPv6 host".into())),
        };
        (h, port)
    } else {
        match part.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (part, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError("empty host".into()));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| UrlError(format!("invalid port {p:?}")))?,
    };
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

/// The port a scheme uses when the URL names none.
pub fn default_port(scheme: &str) -> u16 {
    match scheme {
        "redis" | "rediss" => 6379,
        "redis+sentinel" | "rediss+sentinel" => 26379,
        "mysql" | "mariadb" => 3306,
        "mongodb" | "mongodb+srv" => 27017,
        "postgres" | "postgresql" => 5432,
        "https" => 443,
        _ => 80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_hosts_and_redacts() {
        let u = DbUrl::parse("redis+sentinel://:s%40cret@h1:26379,h2/mymaster?x=1").unwrap();
        assert_eq!(u.password(), Some("s@cret"));
        assert_eq!(u.hosts.len(), 2);
        assert_eq!(u.hosts[1].port, 26379);
        assert_eq!(u.path, "mymaster");
        assert_eq!(
            u.redacted(),
            "redis+sentinel://:***@h1:26379,h2:26379/mymaster?x=1"
        );
        assert!(!format!("{u:?}").contains("cret"));
        assert_eq!(
            u.expose(),
            "redis+sentinel://:s%40cret@h1:26379,h2:26379/mymaster?x=1"
        );
    }

    #[test]
    fn ipv6_and_defaults() {
        let u = DbUrl::parse("postgresql://postgres@[::1]/db").unwrap();
        assert_eq!(u.first_host().to_string(), "[::1]:5432");
        assert_eq!(u.username.as_deref(), Some("postgres"));
        assert!(!u.has_password());
        let u = DbUrl::parse("rediss://h:6380/2#insecure").unwrap();
        assert_eq!(
            (u.path.as_str(), u.fragment.as_deref()),
            ("2", Some("insecure"))
        );
        assert_eq!(u.redacted(), "rediss://h:6380/2#insecure");
        let u = DbUrl::parse("redis+sentinel://s1/m?sentinel_password=p%40ss&x=1").unwrap();
        assert_eq!(
            u.redacted(),
            "redis+sentinel://s1:26379/m?sentinel_password=***&x=1"
        );
        assert_eq!(u.query_param("sentinel_password").as_deref(), Some("p@ss"));
    }

    #[test]
    fn refuses_bad_urls_without_echoing_them() {
        let e = DbUrl::parse("redis://:hunter2@host:notaport").unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        assert!(DbUrl::parse("nonsense").is_err());
        assert!(DbUrl::parse("redis://").is_err());
    }

    #[test]
    fn redact_text_masks_urls_and_secret_keys_in_quoted_source() {
        let snippet = "TOML parse error at line 3, column 9\n  |\n3 | url = \"redis://:PLANTED1@h:6379/0\" x\n  |\n4 | sentinel = \"redis+sentinel://u:PLANTED2@a,b/m?sentinel_pasword=PLANTED3\"\n5 | password = \"PLANTED4\"\nmysql://root@h fine\n";
        let r = redact_text(snippet);
        assert!(!r.contains("PLANTED"), "{r}");
        assert!(r.contains("redis://:***@h:6379/0"), "{r}");
        assert!(r.contains("sentinel_pasword=***"), "{r}");
        assert!(r.contains("mysql://root@h fine"), "{r}");
        assert!(r.contains("line 3, column 9"), "{r}");
    }
}
