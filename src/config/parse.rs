//! The value parsers of the configuration: each turns one variable's text
//! into its typed value or a [`ConfigError`] naming the variable.

use std::time::Duration;

use base64::Engine;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{ConfigError, Redacted, Roles, Sentinel, VARIABLES};
use crate::units::parse_duration;

/// Reads variables through a lookup, empty values counting as unset and a
/// missing value taking its default from [`VARIABLES`].
pub(super) struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Reader<'a> {
        Reader { lookup }
    }

    /// The value if set (and not blank).
    pub(super) fn optional(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// The value, else the table's default (empty for a variable without one).
    pub(super) fn text(&self, name: &str) -> String {
        self.optional(name).unwrap_or_else(|| {
            VARIABLES
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| v.default)
                .unwrap_or_default()
                .to_string()
        })
    }

    pub(super) fn duration(&self, name: &'static str) -> Result<Duration, ConfigError> {
        duration(name, &self.text(name))
    }

    pub(super) fn count(&self, name: &'static str) -> Result<usize, ConfigError> {
        count(name, &self.text(name))
    }

    pub(super) fn boolean(&self, name: &'static str) -> Result<bool, ConfigError> {
        boolean(name, &self.text(name))
    }

    /// An integer in `range`, else `message`.
    pub(super) fn integer(
        &self,
        name: &'static str,
        range: std::ops::RangeInclusive<usize>,
        message: &str,
    ) -> Result<usize, ConfigError> {
        match self.text(name).parse::<usize>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(err(name, message)),
        }
    }

    /// A duration of at least `min`.
    pub(super) fn duration_at_least(
        &self,
        name: &'static str,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        match self.duration(name)? {
            d if d >= min => Ok(d),
            _ => Err(err(name, &format!("expected at least {min:?}"))),
        }
    }

    /// A count if set.
    pub(super) fn optional_count(&self, name: &'static str) -> Result<Option<usize>, ConfigError> {
        self.optional(name).map(|v| count(name, &v)).transpose()
    }

    /// The value through `parse` if set.
    pub(super) fn optional_with<T>(
        &self,
        name: &'static str,
        parse: fn(String) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        self.optional(name).map(parse).transpose()
    }

    /// The value through `parse`, whose error message names no variable.
    pub(super) fn with<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        parse(&self.text(name)).map_err(|m| err(name, &m))
    }

    /// One of `choices` (its text, its value).
    pub(super) fn choice<T: Copy>(
        &self,
        name: &'static str,
        choices: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let value = self.text(name);
        choices
            .iter()
            .find(|(text, _)| *text == value)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<String> = choices.iter().map(|(t, _)| format!("`{t}`")).collect();
                err(name, &format!("expected {}", names.join(" or ")))
            })
    }
}

pub(super) fn err(variable: &'static str, message: &str) -> ConfigError {
    ConfigError {
        variable,
        message: message.to_string(),
    }
}

pub(super) fn url_with_scheme(
    variable: &'static str,
    value: String,
    schemes: &[&str],
) -> Result<String, ConfigError> {
    // The message never echoes the value: URLs carry passwords.
    match url::Url::parse(&value) {
        Ok(u) if schemes.contains(&u.scheme()) => Ok(value),
        Ok(u) => Err(err(
            variable,
            &format!(
                "scheme `{}` is not one of {}",
                u.scheme(),
                schemes.join(", ")
            ),
        )),
        Err(e) => Err(err(variable, &format!("not a URL ({e})"))),
    }
}

/// Both Sentinel variables, or neither.
pub(super) fn sentinel(
    nodes: Option<String>,
    master: Option<String>,
) -> Result<Option<Sentinel>, ConfigError> {
    let (nodes, master) = match (nodes, master) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(err(
                "WF_REDIS_SENTINEL_MASTER",
                "is required with WF_REDIS_SENTINELS (the name the Sentinels monitor)",
            ));
        }
        (None, Some(_)) => {
            return Err(err(
                "WF_REDIS_SENTINELS",
                "is required with WF_REDIS_SENTINEL_MASTER (host:port of each Sentinel)",
            ));
        }
        (Some(n), Some(m)) => (n, m.trim().to_string()),
    };
    let nodes = nodes
        .split(',')
        .map(|n| {
            let n = n.trim();
            match n.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) =>
                {
                    Ok(n.to_string())
                }
                _ => Err(err(
                    "WF_REDIS_SENTINELS",
                    "expected host:port of each Sentinel, separated by commas",
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Sentinel { nodes, master }))
}

/// A comma-separated list of URLs of `schemes` (spaces around commas
/// dropped), each checked as [`url_with_scheme`] does.
pub(super) fn url_list(
    variable: &'static str,
    value: String,
    schemes: &[&str],
) -> Result<String, ConfigError> {
    let urls = value
        .split(',')
        .map(|u| url_with_scheme(variable, u.trim().to_string(), schemes))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(urls.join(","))
}

pub(super) fn namespace(value: String) -> Result<String, ConfigError> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(value)
    } else {
        Err(err(
            "WF_NAMESPACE",
            "expected 1-64 characters of [A-Za-z0-9_-]",
        ))
    }
}

pub(super) fn admin_token(value: String) -> Result<Redacted<String>, ConfigError> {
    if value.len() < 16 {
        return Err(err("WF_ADMIN_TOKEN", "must be at least 16 characters"));
    }
    Ok(Redacted(value))
}

pub(super) fn secret_key(value: String) -> Result<Redacted<[u8; 32]>, ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| err("WF_SECRET_KEY", "not valid base64"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| err("WF_SECRET_KEY", "must decode to exactly 32 bytes"))?;
    Ok(Redacted(key))
}

/// `WF_EXTRA_CA_FILE`: the path of a readable PEM bundle of usable roots;
/// its certificates.
pub(super) fn extra_ca_file(path: String) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let name = "WF_EXTRA_CA_FILE";
    let pem = std::fs::read_to_string(&path)
        .map_err(|e| err(name, &format!("cannot read {path}: {e}")))?;
    ca_bundle(&pem).map_err(|e| err(name, &format!("{path}: {e}")))
}

/// The certificates of a PEM bundle, each usable as a root.
pub(super) fn ca_bundle(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM bundle of certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no CERTIFICATE block".into());
    }
    let mut check = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        check
            .add(cert.clone())
            .map_err(|e| format!("certificate {} is not a usable root: {e}", i + 1))?;
    }
    Ok(certs)
}

/// `WF_HTTP_PROXY`: an `http://` URL of a host and port (credentials
/// allowed, never echoed); the message never shows the value.
pub(super) fn http_proxy(value: String) -> Result<Redacted<String>, ConfigError> {
    let name = "WF_HTTP_PROXY";
    let url = url::Url::parse(value.trim())
        .map_err(|_| err(name, "expected http://[user:password@]host:port"))?;
    if url.scheme() != "http" {
        return Err(err(
            name,
            "the proxy is spoken to in plain http (http://host:port); https to it is not supported",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) || !matches!(url.path(), "" | "/") {
        return Err(err(
            name,
            "expected http://[user:password@]host:port, no path",
        ));
    }
    Ok(Redacted(value.trim().to_string()))
}

pub(super) fn roles(value: &str) -> Result<Roles, ConfigError> {
    let mut roles = Roles {
        ingest: false,
        deliver: false,
        api: false,
    };
    for role in value.split(',').map(str::trim) {
        match role {
            "ingest" => roles.ingest = true,
            "deliver" => roles.deliver = true,
            "api" => roles.api = true,
            other => {
                return Err(err(
                    "WF_ROLES",
                    &format!("unknown role `{other}` (expected ingest, deliver, api)"),
                ));
            }
        }
    }
    Ok(roles)
}

pub(super) fn boolean(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(err(variable, "expected true or false")),
    }
}

pub(super) fn count(variable: &'static str, value: &str) -> Result<usize, ConfigError> {
    match value.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(err(variable, "expected an integer between 1 and 10000")),
    }
}

pub(super) fn duration(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
    match parse_duration(value) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(err(
            variable,
            &format!("`{value}` is not a duration like 500ms, 10s, 2m, 1h or 14d"),
        )),
    }
}
