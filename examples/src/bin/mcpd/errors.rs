//! The API's error body and how every failure becomes one: a stable
//! machine-readable `code`, a human `message`, and the `field` an input error
//! is about. Owns the mapping from [`mcp_lifecycle::ErrorKind`] to HTTP status
//! and the JSON fallbacks for unknown routes and wrong methods.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mcp_lifecycle::{Error, ErrorKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct ApiError {
    /// Stable, machine-readable: `not_found`, `conflict`, `invalid`,
    /// `malformed`, `too_large`, `unsupported_media_type`, `unauthorized`, `forbidden`,
    /// `method_not_allowed`, `unavailable`, `timeout`, `backend`.
    pub(crate) code: String,
    /// What went wrong, for a person.
    pub(crate) message: String,
    /// The rejected field's path (`source.command.program`, `env[0].value`),
    /// when the error is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<String>,
    /// The HTTP status (not serialized: it is the response's own).
    #[serde(skip)]
    pub(crate) status: StatusCode,
}

impl ApiError {
    /// An error with this status and code.
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            code: code.to_owned(),
            message: message.into(),
            field: None,
            status,
        }
    }

    /// Names the field the error is about.
    pub(crate) fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 422 `invalid`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// 400 `malformed`: the body is not JSON (or YAML) at all.
    pub(crate) fn malformed(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed", message)
    }

    /// 404 `not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

/// The path at the start of a parser message (`env[0].value: invalid type`),
/// as the spec parsers and serde_path_to_error write them.
pub(crate) fn leading_path(message: &str) -> Option<&str> {
    let (path, _) = message.split_once(": ")?;
    let is_path = !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']'));
    is_path.then_some(path)
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match e.kind() {
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            // A backend failure is the daemon's side, not the caller's input.
            _ => (StatusCode::BAD_GATEWAY, "backend"),
        };
        let field = match &e {
            Error::Invalid(v) => v.errors.first().map(|f| f.field.clone()),
            Error::InvalidArgument { reason, .. } => leading_path(reason).map(str::to_owned),
            _ => None,
        };
        ApiError {
            code: code.to_owned(),
            message: e.to_string(),
            field,
            status,
        }
    }
}

impl From<mcp_lifecycle::ValidationError> for ApiError {
    fn from(e: mcp_lifecycle::ValidationError) -> Self {
        Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        (status, Json(self)).into_response()
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed", e.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        let text = e.body_text();
        // "Failed to deserialize query string: tail: invalid digit ..."
        let detail = text
            .split_once("query string: ")
            .map_or(text.as_str(), |(_, d)| d);
        let mut err = ApiError::invalid(text.clone());
        if let Some(field) = leading_path(detail) {
            err = err.with_field(field);
        }
        err
    }
}

/// The answer for a path no route serves.
pub(crate) async fn no_route() -> ApiError {
    ApiError::not_found("no such route")
}

/// The answer for a route asked with a method it does not serve.
pub(crate) async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not serve that method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_stable_codes_and_statuses() {
        let cases = [
            (Error::not_found("server \"x\""), 404, "not_found"),
            (Error::invalid("tail", "too big"), 422, "invalid"),
            (Error::unavailable("docker", "down"), 503, "unavailable"),
            (
                Error::Timeout {
                    what: "x".into(),
                    after: std::time::Duration::from_secs(1),
                },
                504,
                "timeout",
            ),
            (
                Error::VersionConflict {
                    key: "k".into(),
                    expected: "1".into(),
                    found: "2".into(),
                },
                409,
                "conflict",
            ),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.status.as_u16(), api.code.as_str()), (status, code));
        }
    }

    #[test]
    fn a_parser_message_names_its_field() {
        let e = Error::invalid("server spec YAML", "env[0].value: invalid type: integer");
        assert_eq!(ApiError::from(e).field.as_deref(), Some("env[0].value"));
        assert_eq!(leading_path("while parsing a block mapping: x"), None);
    }
}
