//! `POST /v1/applications/{app}/tokens`: a new API token for an
//! application (the grant is stored by `auth.rs`).

use hyper::StatusCode;
use serde_json::json;

use super::auth::{self, Role, TokenRecord, hash_token, new_token};
use super::context::{AdminState, Call, Reply};
use super::error::ApiError;
use super::http::json_response;
use super::request::read_fields;
use crate::clock;

/// `POST /v1/applications/{app}/tokens` (operator only).
pub(crate) async fn create_token(state: &AdminState, call: Call) -> Reply {
    let app = call.app.as_str();
    let fields = read_fields(call.body, &["role"]).await?;
    let role = fields
        .string("role", "invalid_role")?
        .and_then(|r| Role::parse(&r))
        .ok_or_else(|| {
            ApiError::invalid("role", "invalid_role", "must be \"admin\" or \"member\"")
        })?;
    let token = new_token();
    let record = TokenRecord {
        application_id: app.to_string(),
        role: role.as_str().to_string(),
        created_at: clock::unix_secs(),
    };
    auth::put(&state.store, &hash_token(&token), &record).await?;
    let body = json!({"token": token, "application_id": app, "role": role.as_str()});
    Ok(json_response(StatusCode::CREATED, &body))
}
