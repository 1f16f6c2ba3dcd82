//! The Docker engine of the machine that runs the command: where `build:` services are
//! built, where `shoal image push` reads images, and where a deploy looks for an image
//! the cluster lacks.
//!
//! The client speaks API 1.41 (Docker 20.10, the oldest engine shoal supports) and is
//! negotiated down further for an older engine, so the requests it sends are ones
//! every supported engine understands. Every error names the engine it could not use:
//! the `DOCKER_HOST` value, or the default socket.

use std::time::Duration;

use anyhow::anyhow;
use bollard::errors::Error as BollardError;
use bollard::image::CreateImageOptions;
use bollard::{ClientVersion, Docker};
use futures::StreamExt;

/// The API version requests are made with (Docker 20.10).
pub const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Seconds the engine has to answer a request's headers. A build only answers once the
/// whole context is uploaded, and a `docker save` once the engine has started writing.
const TIMEOUT_SECS: u64 = 600;

/// Where the engine is when `DOCKER_HOST` is not set.
const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// A connected engine and how to name it in messages.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    /// `DOCKER_HOST unix:///..`, or `the default socket unix:///var/run/docker.sock`.
    place: String,
}

/// What an engine knows of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// `sha256:HEX`.
    pub id: String,
    /// The diff ids of its layers, base first (`sha256:HEX`).
    pub layers: Vec<String>,
}

impl Engine {
    /// Connects to `host` (a `DOCKER_HOST` value; `None`: the default socket, see
    /// [`docker_host`]) and negotiates the API version, which is the first request: an
    /// engine that is not there fails here.
    pub async fn connect_to(host: Option<String>) -> anyhow::Result<Engine> {
        let place = match &host {
            Some(h) => format!("DOCKER_HOST {h}"),
            None => format!("the default socket {DEFAULT_SOCKET}"),
        };
        let uri = host.as_deref().unwrap_or(DEFAULT_SOCKET);
        let docker = if uri.starts_with("unix://") {
            Docker::connect_with_unix(uri, TIMEOUT_SECS, &API_VERSION)
        } else if uri.starts_with("tcp://") || uri.starts_with("http://") {
            Docker::connect_with_http(uri, TIMEOUT_SECS, &API_VERSION)
        } else {
            Docker::connect_with_defaults()
        }
        .map_err(|e| anyhow!("cannot reach this machine's Docker engine ({place}): {e}"))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| anyhow!("cannot reach this machine's Docker engine ({place}): {e}"))?;
        Ok(Engine { docker, place })
    }

    /// `DOCKER_HOST ...` or `the default socket ...`, for messages.
    pub fn place(&self) -> &str {
        &self.place
    }

    #[cfg(test)]
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The image's id and layers, `None` when the engine has no such image.
    pub async fn image(&self, reference: &str) -> anyhow::Result<Option<LocalImage>> {
        match self.docker.inspect_image(reference).await {
            Ok(inspect) => {
                let id = inspect
                    .id
                    .ok_or_else(|| anyhow!("the engine ({}) gave {reference} no id", self.place))?;
                let layers = inspect.root_fs.and_then(|r| r.layers).unwrap_or_default();
                Ok(Some(LocalImage { id, layers }))
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(anyhow!(
                "inspect image {reference} on this machine's engine ({}): {}",
                self.place,
                words(&e)
            )),
        }
    }

    /// Pulls `reference` from its registry; the error is the registry's own words.
    pub async fn pull(&self, reference: &str) -> Result<(), String> {
        let (from_image, tag) = pull_target(reference);
        let opts = CreateImageOptions {
            from_image,
            tag,
            ..Default::default()
        };
        let mut progress = self.docker.create_image(Some(opts), None, None);
        while let Some(msg) = progress.next().await {
            match msg {
                Ok(info) => {
                    if let Some(e) = info.error {
                        return Err(e);
                    }
                }
                Err(e) => return Err(words(&e)),
            }
        }
        Ok(())
    }

    /// Gives the image `source` (a reference or an id) the name `target` (`REPO[:TAG]`,
    /// `latest` when no tag is written).
    pub async fn tag(&self, source: &str, target: &str) -> anyhow::Result<()> {
        let (repo, tag) = split_tag(target);
        let opts = bollard::image::TagImageOptions {
            repo: repo.to_string(),
            tag: tag.unwrap_or("latest").to_string(),
        };
        self.docker
            .tag_image(source, Some(opts))
            .await
            .map_err(|e| anyhow!("tag {source} as {target}: {}", words(&e)))
    }

    /// A client for requests that may run for long (builds, saves): the request timeout
    /// only bounds the engine's first answer.
    pub fn long_running(&self) -> Docker {
        self.docker
            .clone()
            .with_timeout(Duration::from_secs(TIMEOUT_SECS))
    }
}

/// `DOCKER_HOST` when it is set and not empty: the engine to use.
pub fn docker_host() -> Option<String> {
    std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty())
}

/// The engine's (or registry's) own words in a bollard error.
pub fn words(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        BollardError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// `REPO` and `TAG` of `REPO[:TAG]` (a `:` before the last `/` is a registry's port;
/// a digest reference has no tag).
pub fn split_tag(reference: &str) -> (&str, Option<&str>) {
    if reference.contains('@') {
        return (reference, None);
    }
    let repo = shoal_proto::spec::image_repository(reference);
    match reference.get(repo.len() + 1..) {
        Some(tag) if !tag.is_empty() => (repo, Some(tag)),
        _ => (repo, None),
    }
}

/// What `POST /images/create` is asked for: `latest` when no tag is written, as the
/// docker CLI does (a name alone would pull every tag).
fn pull_target(reference: &str) -> (String, String) {
    if reference.contains('@') {
        return (reference.to_string(), String::new());
    }
    let (repo, tag) = split_tag(reference);
    (repo.to_string(), tag.unwrap_or("latest").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_split_after_the_registry_port() {
        assert_eq!(split_tag("web:1"), ("web", Some("1")));
        assert_eq!(split_tag("web"), ("web", None));
        assert_eq!(
            split_tag("reg:5000/team/web:shoal-abc"),
            ("reg:5000/team/web", Some("shoal-abc"))
        );
        assert_eq!(split_tag("reg:5000/team/web"), ("reg:5000/team/web", None));
        assert_eq!(split_tag("web@sha256:00"), ("web@sha256:00", None));
    }

    #[test]
    fn pulls_name_a_tag() {
        assert_eq!(pull_target("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(pull_target("foo:1"), ("foo".into(), "1".into()));
        assert_eq!(
            pull_target("foo@sha256:ab"),
            ("foo@sha256:ab".into(), String::new())
        );
    }

    /// An engine that is not there is named in the error, before any build starts.
    #[tokio::test]
    async fn an_absent_engine_is_named() {
        let host = "unix:///nonexistent/shoal-test.sock".to_string();
        let err = Engine::connect_to(Some(host))
            .await
            .map(|_| ())
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with(
                "cannot reach this machine's Docker engine (DOCKER_HOST unix:///nonexistent/shoal-test.sock): "
            ),
            "{msg}"
        );
    }
}
