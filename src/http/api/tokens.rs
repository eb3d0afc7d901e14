//! Admin API tokens: created with a name (the plaintext is shown once), listed,
//! revoked. Only verifiers are replicated; every node accepts every token.

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use sluice_cluster::command::Op;
use utoipa::ToSchema;

use super::{error, parse, propose, verifier_of, Answer, ApiError, ApiState};
use crate::support::random_hex;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    /// 1 to 64 printable characters, unique.
    #[schema(min_length = 1, max_length = 64)]
    name: String,
    /// Monitoring: may read, never change.
    #[serde(default)]
    read_only: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct TokenView {
    pub(crate) token_id: String,
    pub(crate) name: String,
    pub(crate) read_only: bool,
    pub(crate) created_ms: i64,
    pub(crate) revoked_ms: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct TokenCreated {
    pub(crate) token_id: String,
    pub(crate) name: String,
    pub(crate) read_only: bool,
    /// The token itself, shown this once; the cluster keeps only a SHA-256.
    pub(crate) token: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct TokenList {
    pub(crate) tokens: Vec<TokenView>,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens",
    request_body = NewToken,
    responses(
        (status = 201, body = TokenCreated),
        (status = 400, body = ApiError),
        (status = 409, description = "A token with this name exists", body = ApiError),
        (status = 422, body = ApiError),
    ))]
pub(super) async fn create(AxumState(s): AxumState<ApiState>, body: Bytes) -> Answer {
    let req: NewToken = parse(&body)?;
    let (token_id, token) = match (random_hex(), random_hex()) {
        (Ok(id), Ok(token)) => (format!("t{}", &id[..12]), format!("st{}", &token[..48])),
        _ => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no randomness for a token",
                None,
            ))
        }
    };
    let op = Op::CreateAdminToken {
        token_id: token_id.clone(),
        name: req.name.clone(),
        verifier: verifier_of(&token),
        read_only: req.read_only,
    };
    propose(&s, op).await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token_id,
            name: req.name,
            read_only: req.read_only,
            token,
        }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = TokenList)))]
pub(super) async fn list(AxumState(s): AxumState<ApiState>) -> Answer {
    let listed = s
        .handle
        .read_linearizable(|st| {
            st.admin_tokens
                .values()
                .map(|t| TokenView {
                    token_id: t.token_id.clone(),
                    name: t.name.clone(),
                    read_only: t.read_only,
                    created_ms: t.created_ms,
                    revoked_ms: t.revoked_ms,
                })
                .collect::<Vec<_>>()
        })
        .await;
    let tokens = listed?;
    Ok(Json(TokenList { tokens }).into_response())
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked on every node"),
        (status = 404, body = ApiError),
    ))]
pub(super) async fn revoke(AxumState(s): AxumState<ApiState>, Path(id): Path<String>) -> Answer {
    propose(&s, Op::RevokeAdminToken { token_id: id }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
