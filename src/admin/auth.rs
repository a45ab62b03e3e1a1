//! Bearer-token authentication: the operator token from `WF_ADMIN_TOKEN`, and
//! application tokens stored only as SHA-256 hashes.

use base64::Engine;
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use deadpool_redis::redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::config::Redacted;
use crate::subscription::{Store, StoreError};

/// An application token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Manages the application's webhooks.
    Admin,
    /// Reads them.
    Member,
}

impl Role {
    /// Parses `admin` / `member`.
    pub(super) fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
    /// The stored name.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// The operator: everything.
    Operator,
    /// An application token.
    App {
        /// The application it acts for.
        application_id: String,
        /// Its role.
        role: Role,
    },
}

impl Principal {
    /// `GET /v1/me`: the caller's role and, for an application token, its
    /// application (the dashboard shows what the role allows).
    pub(super) fn view(&self) -> serde_json::Value {
        match self {
            Principal::Operator => serde_json::json!({"role": "operator", "application_id": null}),
            Principal::App {
                application_id,
                role,
            } => serde_json::json!({"role": role.as_str(), "application_id": application_id}),
        }
    }

    /// Whether the caller may act on `app` with `need` (`None` = read).
    /// Another application's token sees 404, as if the resource did not exist.
    pub(crate) fn authorize(&self, app: &str, need: Option<Role>) -> Result<(), ApiError> {
        match self {
            Principal::Operator => Ok(()),
            Principal::App { application_id, .. } if application_id != app => {
                Err(ApiError::not_found("application"))
            }
            Principal::App { role, .. } => match (need, role) {
                (Some(Role::Admin), Role::Member) => Err(ApiError::forbidden(
                    "this action needs an admin token of the application",
                )),
                _ => Ok(()),
            },
        }
    }

    /// Only the operator may pass.
    pub(crate) fn operator_only(&self) -> Result<(), ApiError> {
        match self {
            Principal::Operator => Ok(()),
            Principal::App { .. } => {
                Err(ApiError::forbidden("this action needs the operator token"))
            }
        }
    }
}

/// A new application token: `wft_` + base64url of 32 random bytes.
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "wft_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a token.
pub(crate) fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Identifies the caller from `Authorization: Bearer <token>`.
pub(crate) async fn authenticate(
    headers: &HeaderMap,
    operator: Option<&Redacted<String>>,
    store: &Store,
) -> Result<Principal, ApiError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(ApiError::unauthorized)?;
    let Some(operator) = operator else {
        // Without WF_ADMIN_TOKEN nothing but health and metrics answers.
        return Err(ApiError::unauthorized());
    };
    if bool::from(token.as_bytes().ct_eq(operator.0.as_bytes())) {
        return Ok(Principal::Operator);
    }
    // The lookup key is the token's hash, so timing reveals nothing of the token.
    match get(store, &hash_token(token)).await? {
        Some(record) => Ok(Principal::App {
            role: Role::parse(&record.role).ok_or_else(ApiError::unauthorized)?,
            application_id: record.application_id,
        }),
        None => Err(ApiError::unauthorized()),
    }
}

/// An API token's grant; the token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TokenRecord {
    /// The application the token acts for.
    pub application_id: String,
    /// `admin` or `member`.
    pub role: String,
    /// Unix seconds.
    pub created_at: i64,
}

fn key(store: &Store) -> String {
    store.key("tokens")
}

/// Records a token grant, in the hash `{ns}:tokens`, under the token's SHA-256 hex.
pub(super) async fn put(store: &Store, hash: &str, record: &TokenRecord) -> Result<(), StoreError> {
    let mut conn = store.connection().await?;
    let _: i64 = conn
        .hset(key(store), hash, serde_json::to_string(record)?)
        .await?;
    Ok(())
}

/// The grant of the token whose SHA-256 hex is `hash`.
async fn get(store: &Store, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
    let mut conn = store.connection().await?;
    let raw: Option<String> = conn.hget(key(store), hash).await?;
    Ok(raw.map(|r| serde_json::from_str(&r)).transpose()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, role: Role) -> Principal {
        Principal::App {
            application_id: id.into(),
            role,
        }
    }

    #[test]
    fn the_role_matrix() {
        let read = None;
        let write = Some(Role::Admin);
        assert!(Principal::Operator.authorize("a", write).is_ok());
        assert!(app("a", Role::Admin).authorize("a", write).is_ok());
        assert!(app("a", Role::Member).authorize("a", read).is_ok());
        assert_eq!(
            app("a", Role::Member)
                .authorize("a", write)
                .unwrap_err()
                .code,
            "forbidden"
        );
        assert_eq!(
            app("b", Role::Admin).authorize("a", read).unwrap_err().code,
            "not_found"
        );
        assert_eq!(
            app("a", Role::Admin).operator_only().unwrap_err().code,
            "forbidden"
        );
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let t = new_token();
        assert!(t.starts_with("wft_") && t.len() > 40);
        assert_ne!(t, new_token());
        assert_eq!(hash_token(&t).len(), 64);
        assert!(!hash_token(&t).contains(&t));
    }

    #[tokio::test]
    async fn a_grant_reads_back_under_its_hash_only() {
        // The local Redis, in a namespace of its own deleted at the end.
        let store = Store::local_for_test("tokens");
        let record = TokenRecord {
            application_id: "app_1".into(),
            role: "admin".into(),
            created_at: 1_700_000_000,
        };
        put(&store, "ab12", &record).await.unwrap();
        assert_eq!(get(&store, "ab12").await.unwrap(), Some(record));
        assert_eq!(get(&store, "cd34").await.unwrap(), None);
        store.delete_namespace().await.unwrap();
    }
}
