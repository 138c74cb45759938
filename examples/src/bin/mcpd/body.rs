//! Request bodies: server specs as JSON or YAML (chosen by `Content-Type`)
//! and small JSON bodies, each with the error a caller can act on — 400
//! `malformed` when the text is not JSON/YAML at all, 415 for another media
//! type, 422 `invalid` naming the field when it parses but does not fit.
//!
//! Whether a body is JSON or YAML at all is asked with [`IgnoredAny`], which
//! takes every value the syntax allows: a document with an integer wider than
//! 64 bits is still YAML, and the field that cannot hold it is named (422).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use mcp_lifecycle::ServerSpec;
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::errors::{ApiError, leading_path};

/// The largest body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The formats a body may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
}

fn format_of(request: &Request, yaml_allowed: bool) -> Result<Format, ApiError> {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return Ok(Format::Json);
    };
    let media = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Ok(Format::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" if yaml_allowed => {
            Ok(Format::Yaml)
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            if yaml_allowed {
                format!("{media:?} is not accepted: send application/json or application/yaml")
            } else {
                format!("{media:?} is not accepted: send application/json")
            },
        )),
    }
}

async fn text_of(request: Request) -> Result<String, ApiError> {
    let bytes = Bytes::from_request(request, &()).await.map_err(|e| {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "malformed"
        };
        ApiError::new(
            e.status(),
            code,
            format!("reading the body: {}", e.body_text()),
        )
    })?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::malformed("the body is not UTF-8"))
}

/// A server spec from a JSON or YAML body (not yet validated).
#[derive(Debug)]
pub(crate) struct SpecBody(pub(crate) ServerSpec);

impl<S: Send + Sync> FromRequest<S> for SpecBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let format = format_of(&request, true)?;
        let text = text_of(request).await?;
        let spec = match format {
            Format::Json => {
                serde_json::from_str::<IgnoredAny>(&text)
                    .map_err(|e| ApiError::malformed(format!("the body is not JSON: {e}")))?;
                ServerSpec::from_json(&text)?
            }
            Format::Yaml => {
                serde_norway::from_str::<IgnoredAny>(&text)
                    .map_err(|e| ApiError::malformed(format!("the body is not YAML: {e}")))?;
                ServerSpec::from_yaml(&text)?
            }
        };
        Ok(SpecBody(spec))
    }
}

/// A JSON body of type `T`; a field that does not fit is named.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        format_of(&request, false)?;
        let text = text_of(request).await?;
        serde_json::from_str::<IgnoredAny>(&text)
            .map_err(|e| ApiError::malformed(format!("the body is not JSON: {e}")))?;
        let mut de = serde_json::Deserializer::from_str(&text);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let message = format!("{path}: {}", e.inner());
            let mut err = ApiError::invalid(message.clone());
            if let Some(field) = leading_path(&message).filter(|p| *p != ".") {
                err = err.with_field(field);
            }
            err
        })?;
        Ok(JsonBody(value))
    }
}
