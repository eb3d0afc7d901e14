//! Admin API tokens: verifiers replicated so every node accepts every token.

use super::{Applied, Op, Refusal};
use crate::model::AdminToken;
use crate::state::State;

/// Applies an admin token command; `super::apply` routes only those here.
pub(super) fn apply(state: &mut State, at: i64, op: &Op) -> Result<Applied, Refusal> {
    match op {
        Op::CreateAdminToken {
            token_id,
            name,
            verifier,
            read_only,
        } => create(state, at, token_id, name, verifier, *read_only),
        Op::RevokeAdminToken { token_id } => revoke(state, at, token_id),
        other => unreachable!("not an admin token command: {other:?}"),
    }
}

fn create(
    state: &mut State,
    at: i64,
    token_id: &str,
    name: &str,
    verifier: &str,
    read_only: bool,
) -> Result<Applied, Refusal> {
    if token_id.is_empty()
        || token_id.len() > 64
        || !token_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Refusal::invalid(
            "token_id",
            "must be 1 to 64 letters, digits or '-'",
        ));
    }
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Refusal::invalid(
            "name",
            "must be 1 to 64 printable characters",
        ));
    }
    super::key::check_verifier(verifier)?;
    if let Some(existing) = state.admin_tokens.get(token_id) {
        // Registering the same token again (a node restarting) changes nothing.
        if existing.verifier == verifier && existing.read_only == read_only {
            return Ok(Applied::Done);
        }
        return Err(Refusal::AlreadyExists {
            what: "token".into(),
            name: token_id.into(),
        });
    }
    if state.admin_tokens.values().any(|t| t.verifier == verifier) {
        return Err(Refusal::VerifierInUse);
    }
    state.admin_tokens.insert(
        token_id.into(),
        AdminToken {
            token_id: token_id.into(),
            name: name.into(),
            verifier: verifier.into(),
            read_only,
            created_ms: at,
            revoked_ms: None,
        },
    );
    Ok(Applied::Done)
}

fn revoke(state: &mut State, at: i64, token_id: &str) -> Result<Applied, Refusal> {
    let token = state
        .admin_tokens
        .get_mut(token_id)
        .ok_or_else(|| Refusal::not_found("token", token_id))?;
    token.revoked_ms.get_or_insert(at);
    Ok(Applied::Done)
}
