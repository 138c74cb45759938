//! Bearer-token authentication and role checks for the API. Owns the
//! [`TokenSet`] (tokens kept only as SHA-256 digests, compared in constant
//! time), the [`Role`]s, and the middleware that answers 401 for a missing
//! or unknown token and 403 for a read-only token asking the REST API for a
//! change (the MCP endpoints take any valid token: MCP calls are reads).
//! Refusals are logged with the method, path and peer, never the token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::errors::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Role {
    /// Reads only: list, get, logs, events, the OpenAPI document, MCP calls.
    ReadOnly,
    /// Everything.
    Admin,
}

struct Entry {
    name: String,
    digest: [u8; 32],
    role: Role,
}

/// The accepted tokens. Holds digests, never the tokens themselves.
#[derive(Default)]
pub(crate) struct TokenSet {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<(&str, Role)> = self
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.role))
            .collect();
        f.debug_struct("TokenSet").field("tokens", &names).finish()
    }
}

/// Short tokens are guessable; refuse them at load.
pub(crate) const MIN_TOKEN_LEN: usize = 8;

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenSet {
    /// Adds a token under a name (for logs) with a role.
    pub(crate) fn add(&mut self, name: &str, token: &str, role: Role) -> anyhow::Result<()> {
        if token.len() < MIN_TOKEN_LEN {
            anyhow::bail!("token {name:?} is shorter than {MIN_TOKEN_LEN} characters");
        }
        self.entries.push(Entry {
            name: name.to_owned(),
            digest: digest(token),
            role,
        });
        Ok(())
    }

    /// Whether no token is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[cfg(test)]
    /// The role of `token`, comparing its digest with every entry in constant
    /// time (no early exit, so timing tells neither which nor how much matched).
    pub(crate) fn role_of(&self, token: &str) -> Option<Role> {
        self.lookup(token).map(|(_, role)| role)
    }

    /// The name and role of `token`, comparing its digest with every entry
    /// in constant time.
    fn lookup(&self, token: &str) -> Option<(&str, Role)> {
        let presented = digest(token);
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            let same: Choice = entry.digest.ct_eq(&presented);
            if bool::from(same) && found.is_none() {
                found = Some(entry);
            }
        }
        found.map(|e| (e.name.as_str(), e.role))
    }
}

/// Whether a request changes something (and so needs an admin token).
fn is_change(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The name and role of the request's bearer token, or the refusal
/// (logged here, without the token).
fn authenticate<'t>(tokens: &'t TokenSet, request: &Request) -> Result<(&'t str, Role), ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    presented.and_then(|t| tokens.lookup(t)).ok_or_else(|| {
        tracing::warn!(
            method = %request.method(),
            path = %request.uri().path(),
            presented = presented.is_some(),
            "refused a request without a valid token"
        );
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer TOKEN)",
        )
    })
}

/// The 401 answer, with the challenge header.
fn unauthorized(refusal: ApiError) -> Response {
    let mut response = refusal.into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Middleware for the REST API: authenticates the bearer token and enforces
/// the role (a change needs an admin token).
pub(crate) async fn require_token(
    State(tokens): State<Arc<TokenSet>>,
    request: Request,
    next: Next,
) -> Response {
    let (name, role) = match authenticate(&tokens, &request) {
        Ok(found) => found,
        Err(refusal) => return unauthorized(refusal),
    };
    let method = request.method();
    let path = request.uri().path();
    if role == Role::ReadOnly && is_change(method) {
        tracing::warn!(%method, %path, token = name, "refused a change asked with a read-only token");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token {name:?} is read-only; {method} needs an admin token"),
        )
        .into_response();
    }
    tracing::debug!(%method, %path, token = name, "authenticated");
    next.run(request).await
}

/// Middleware for the MCP endpoints: any valid token will do. MCP calls are
/// reads in mcpd's roles (they use servers, they do not change what runs),
/// even though MCP over HTTP sends them as POST (and ends sessions with DELETE).
pub(crate) async fn require_mcp_token(
    State(tokens): State<Arc<TokenSet>>,
    request: Request,
    next: Next,
) -> Response {
    match authenticate(&tokens, &request) {
        Ok((name, _)) => {
            tracing::debug!(path = %request.uri().path(), token = name, "authenticated an MCP request");
            next.run(request).await
        }
        Err(refusal) => unauthorized(refusal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly_and_debug_shows_no_token() {
        let mut set = TokenSet::default();
        set.add("ops", "admin-token-1", Role::Admin).unwrap();
        set.add("dash", "read-token-1", Role::ReadOnly).unwrap();
        assert_eq!(set.role_of("admin-token-1"), Some(Role::Admin));
        assert_eq!(set.role_of("read-token-1"), Some(Role::ReadOnly));
        assert_eq!(set.role_of("admin-token-"), None);
        assert_eq!(set.role_of("admin-token-12"), None);
        assert_eq!(set.role_of(""), None);
        let debug = format!("{set:?}");
        assert!(
            debug.contains("ops") && !debug.contains("admin-token-1"),
            "{debug}"
        );
        assert!(set.add("short", "abc", Role::Admin).is_err());
    }

    #[test]
    fn only_reads_are_open_to_read_only_tokens() {
        assert!(!is_change(&Method::GET));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_change(&m), "{m}");
        }
    }
}
