//! A webhook's receiver authentication (`auth`): OAuth2 client credentials
//! (RFC 6749 section 4.4). Deliveries carry `Authorization: Bearer <token>`
//! from the webhook's token endpoint (`crate::delivery`'s `oauth.rs` fetches
//! and caches it). The client secret is sealed at rest like the signing
//! secrets and never shown again.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Redacted;

/// The one `type` there is.
pub const OAUTH2_CLIENT_CREDENTIALS: &str = "oauth2_client_credentials";

/// Longest `token_url`, as for callback URLs.
const MAX_URL_CHARS: usize = 2048;
/// Longest `client_id`, `client_secret`, `scope` or `audience`.
const MAX_FIELD_CHARS: usize = 1024;

/// OAuth2 client credentials, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// The token endpoint (checked like callback URLs).
    pub token_url: String,
    /// The client's id at the authorization server.
    pub client_id: String,
    /// The client's secret; sealed at rest.
    #[serde(with = "super::webhook::redacted_string")]
    pub client_secret: Redacted<String>,
    /// `scope` of the token request, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `audience` of the token request, if any (Auth0, Okta and others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

impl Auth {
    /// The API's `auth` object, or why not (the message names the member).
    /// `token_url` is only read here; the caller checks it like a URL.
    pub fn from_json(value: &Value) -> Result<Auth, String> {
        let Value::Object(object) = value else {
            return Err(format!(
                "must be an object {{\"type\": \"{OAUTH2_CLIENT_CREDENTIALS}\", \"token_url\", \"client_id\", \"client_secret\", \"scope\"?, \"audience\"?}}, or null"
            ));
        };
        const MEMBERS: [&str; 6] = [
            "type",
            "token_url",
            "client_id",
            "client_secret",
            "scope",
            "audience",
        ];
        if let Some(other) = object.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
            return Err(format!("unknown member `{other}`"));
        }
        let text = |name: &str, required: bool| -> Result<Option<String>, String> {
            match object.get(name) {
                None | Some(Value::Null) if !required => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => {
                    let most = if name == "token_url" {
                        MAX_URL_CHARS
                    } else {
                        MAX_FIELD_CHARS
                    };
                    if s.chars().count() > most || s.chars().any(char::is_control) {
                        return Err(format!(
                            "`{name}` must be at most {most} printable characters"
                        ));
                    }
                    Ok(Some(s.clone()))
                }
                _ if required => Err(format!("`{name}` is required, a non-empty string")),
                _ => Err(format!("`{name}` must be a non-empty string or null")),
            }
        };
        if text("type", true)?.as_deref() != Some(OAUTH2_CLIENT_CREDENTIALS) {
            return Err(format!("`type` must be \"{OAUTH2_CLIENT_CREDENTIALS}\""));
        }
        let required = |name: &str| text(name, true).map(Option::unwrap_or_default);
        Ok(Auth {
            token_url: required("token_url")?,
            client_id: required("client_id")?,
            client_secret: Redacted(required("client_secret")?),
            scope: text("scope", false)?,
            audience: text("audience", false)?,
        })
    }

    /// The API's object with the secret, for checking a stored record as
    /// the API would (an import).
    pub(crate) fn view_with_secret(&self) -> Value {
        let mut v = self.view();
        v["client_secret"] = json!(self.client_secret.0);
        v
    }

    /// The public view: everything but the secret.
    pub fn view(&self) -> Value {
        json!({
            "type": OAUTH2_CLIENT_CREDENTIALS,
            "token_url": self.token_url,
            "client_id": self.client_id,
            "scope": self.scope,
            "audience": self.audience,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Value {
        json!({
            "type": "oauth2_client_credentials",
            "token_url": "https://auth.example/oauth/token",
            "client_id": "fanout",
            "client_secret": "s3cr3t",
            "scope": "webhooks:write",
        })
    }

    #[test]
    fn client_credentials_are_read_and_shown_without_the_secret() {
        let auth = Auth::from_json(&valid()).unwrap();
        assert_eq!(auth.client_secret.0, "s3cr3t");
        assert_eq!(auth.audience, None);
        let view = auth.view().to_string();
        assert!(
            view.contains("webhooks:write") && !view.contains("s3cr3t"),
            "{view}"
        );
        assert!(!format!("{auth:?}").contains("s3cr3t"));
    }

    #[test]
    fn what_is_not_client_credentials_is_refused_naming_the_member() {
        let with = |member: &str, value: Value| {
            let mut v = valid();
            v[member] = value;
            Auth::from_json(&v).unwrap_err()
        };
        assert!(with("type", json!("basic")).contains("`type`"));
        assert!(with("client_secret", json!("")).contains("`client_secret` is required"));
        assert!(with("client_id", json!(7)).contains("`client_id`"));
        assert!(with("scope", json!(["a"])).contains("`scope`"));
        assert!(with("password", json!("x")).contains("unknown member `password`"));
        assert!(with("audience", json!("a\nb")).contains("printable"));
        assert!(
            Auth::from_json(&json!("token"))
                .unwrap_err()
                .contains("must be an object")
        );
        let mut missing = valid();
        missing.as_object_mut().unwrap().remove("token_url");
        assert!(
            Auth::from_json(&missing)
                .unwrap_err()
                .contains("`token_url` is required")
        );
    }
}
