//! What an API caller may ask a backend to run, so an admin token is not a
//! shell on the host: the local backend runs only allow-listed programs, and
//! a source the configured backend cannot run (an image on the local backend,
//! a program on Docker) is refused at once rather than retried forever.
//!
//! Docker: a [`ServerSpec`] today cannot ask for host mounts, privileged
//! mode, the host network or added capabilities at all (the Docker backend
//! drops every capability, sets `no-new-privileges`, mounts only a tmpfs and
//! attaches its own network), so there is nothing for this policy to refuse
//! there yet; when the spec grows such fields, their checks belong here.
//! Kubernetes: the same holds for pods (the restricted Pod Security profile,
//! no service account token, a read-only root filesystem).

use mcp_lifecycle::{ServerSpec, Source, ValidationError};

use crate::config::Backend;

/// The admission policy for specs.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    backend: Backend,
    allowed_programs: Vec<String>,
}

impl Policy {
    /// A policy for `backend` with the local backend's allow-list.
    pub(crate) fn new(backend: Backend, allowed_programs: Vec<String>) -> Self {
        Policy {
            backend,
            allowed_programs,
        }
    }

    /// Refuses a spec the configuration does not allow, naming the field.
    pub(crate) fn admit(&self, spec: &ServerSpec) -> Result<(), ValidationError> {
        // A source the backend cannot run is refused now, not retried forever.
        match (self.backend, &spec.source) {
            (Backend::Docker, Source::Command(_)) => {
                return Err(ValidationError::single(
                    &spec.name,
                    "source.command",
                    "mcpd runs the docker backend, which runs images only (source.image)",
                ));
            }
            (Backend::Kubernetes, Source::Command(_)) => {
                return Err(ValidationError::single(
                    &spec.name,
                    "source.command",
                    "mcpd runs the kubernetes backend, which runs images (source.image) or \
                     adopts Deployments (source.existing)",
                ));
            }
            (Backend::Local, Source::Image(_)) => {
                return Err(ValidationError::single(
                    &spec.name,
                    "source.image",
                    "mcpd runs the local backend, which runs programs only (source.command)",
                ));
            }
            _ => {}
        }
        if let (Backend::Local, Source::Command(command)) = (self.backend, &spec.source)
            && !self.allowed_programs.iter().any(|p| p == &command.program)
        {
            let reason = if self.allowed_programs.is_empty() {
                "no program is allowed: mcpd's configuration has an empty \
                 `local.allowed_programs`"
                    .to_owned()
            } else {
                format!(
                    "{:?} is not among the programs mcpd's configuration allows \
                     (`local.allowed_programs`)",
                    command.program
                )
            };
            return Err(ValidationError::single(
                &spec.name,
                "source.command.program",
                reason,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_lifecycle::spec::Command;

    fn spec(program: &str) -> ServerSpec {
        ServerSpec::new(
            "s",
            Source::Command(Command {
                program: program.into(),
                args: vec![],
                working_dir: None,
            }),
        )
    }

    #[test]
    fn only_listed_programs_run_on_the_local_backend() {
        let p = Policy::new(Backend::Local, vec!["/usr/bin/ok".into()]);
        assert!(p.admit(&spec("/usr/bin/ok")).is_ok());
        let err = p.admit(&spec("/bin/sh")).unwrap_err();
        assert!(err.names_field("source.command.program"), "{err}");
        // Exact match: no prefix, no PATH lookup.
        assert!(p.admit(&spec("/usr/bin/ok2")).is_err());
        assert!(p.admit(&spec("ok")).is_err());
        let none = Policy::new(Backend::Local, vec![]);
        assert!(none.admit(&spec("/usr/bin/ok")).is_err());
        // A source the backend cannot run names its field.
        let image = ServerSpec::new("i", Source::Image("x:1".into()));
        assert!(p.admit(&image).unwrap_err().names_field("source.image"));
        let docker = Policy::new(Backend::Docker, vec![]);
        assert!(docker.admit(&image).is_ok());
        let err = docker.admit(&spec("/usr/bin/ok")).unwrap_err();
        assert!(err.names_field("source.command"), "{err}");
        let cluster = Policy::new(Backend::Kubernetes, vec!["/usr/bin/ok".into()]);
        assert!(cluster.admit(&image).is_ok());
        let err = cluster.admit(&spec("/usr/bin/ok")).unwrap_err();
        assert!(err.names_field("source.command"), "{err}");
    }
}
