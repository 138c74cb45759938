//! How API server answers become the library's errors: a 404 is
//! `NotFound`, a 403 names the verb and resource the backend's role lacks,
//! a rejected object is `Invalid`, an unreachable server is `Unavailable`.

use mcp_lifecycle::Error;

/// What a call was doing, for error messages: `verb` and `resource` as RBAC
/// names them (`patch`, `deployments`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) verb: &'a str,
    pub(crate) resource: &'a str,
    pub(crate) name: &'a str,
    pub(crate) namespace: &'a str,
}

/// A denied call, with what to grant.
#[derive(Debug, thiserror::Error)]
#[error(
    "forbidden: the backend's role needs verb `{verb}` on `{resource}` in namespace `{namespace}` ({message})"
)]
pub struct Forbidden {
    /// The RBAC verb.
    pub verb: String,
    /// The RBAC resource (with subresource: `pods/status`).
    pub resource: String,
    /// The namespace.
    pub namespace: String,
    /// The API server's words.
    pub message: String,
}

/// Maps a kube error for `call`.
pub(crate) fn map(call: Call<'_>, error: kube::Error) -> Error {
    let what = format!("{} {}", call.resource, call.name);
    match error {
        kube::Error::Api(status) => match status.code {
            404 => Error::not_found(what),
            403 => Error::backend(
                "kubernetes",
                format!("{} {what}", call.verb),
                Forbidden {
                    verb: call.verb.to_owned(),
                    resource: call.resource.to_owned(),
                    namespace: call.namespace.to_owned(),
                    message: status.message.clone(),
                },
            ),
            400 | 422 => Error::invalid(what, status.message.clone()),
            500.. => Error::unavailable("the Kubernetes API server", status.message.clone()),
            _ => Error::backend(
                "kubernetes",
                format!("{} {what}", call.verb),
                kube::Error::Api(status),
            ),
        },
        kube::Error::HyperError(e) => {
            Error::unavailable("the Kubernetes API server", e.to_string())
        }
        kube::Error::Service(e) => Error::unavailable("the Kubernetes API server", e.to_string()),
        other => Error::backend("kubernetes", format!("{} {what}", call.verb), other),
    }
}

/// Whether a kube error is a 404.
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}
