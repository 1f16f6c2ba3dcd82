//! Building a `build:` service on this machine's engine.
//!
//! The classic builder (`POST /build`, builder version 1) is used: BuildKit over the
//! API needs a gRPC session the client serves (for the context, secrets and the
//! result), which bollard 0.18 only offers with its `buildkit` feature and a registry
//! export; the classic builder takes the context as one tar and leaves the image in
//! the engine, which is what `docker save` then reads. The consequence: Dockerfile
//! features only BuildKit knows (`RUN --mount`, heredocs) fail with the builder's
//! own error.
//!
//! The builder's output is streamed to stderr as it arrives (stdout stays clean for
//! `--format json`). The result is tagged with its content-derived reference
//! ([`ServiceSpec::built_reference`]), with `image:` as written (Compose names the
//! result so) and with `build.tags`.

use std::collections::HashMap;
use std::io::Write;

use anyhow::anyhow;
use bollard::image::{BuildImageOptions, BuilderVersion};
use bollard::models::BuildInfo;
use futures::StreamExt;
use shoal_proto::spec::{BuildSpec, ServiceSpec};

use super::context::{tar_context, ContextTar};
use super::engine::{words, Engine};

/// What a build left in the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// `REPO:shoal-HEX12`: what the stored spec runs.
    pub reference: String,
    /// `sha256:HEX`.
    pub id: String,
}

/// Builds `service` (which has `build:`) of `stack`, writing the builder's output to
/// `out`. A failure reads `build of STACK/SERVICE (FILE:LINE) failed: WHY`, WHY being
/// the builder's own words when the builder refused.
pub async fn build(
    engine: &Engine,
    stack: &str,
    service: &ServiceSpec,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Built> {
    let failed = |why: String| failure(stack, service, &why);
    let spec = service
        .build
        .clone()
        .ok_or_else(|| failed("the service has no build: section".into()))?;
    let context = tokio::task::spawn_blocking({
        let spec = spec.clone();
        move || tar_context(&spec)
    })
    .await
    .map_err(|e| failed(format!("tar the build context: {e}")))?
    .map_err(|e| failed(format!("{e:#}")))?;
    let _ = writeln!(
        out,
        "building {stack}/{} from {} ({} entries, {} bytes)",
        service.name,
        spec.context,
        context.entries,
        context.tar.len()
    );
    for skipped in &context.skipped {
        let _ = writeln!(out, "  left out {skipped}: not a file, directory or link");
    }
    if spec.extra_hosts.len() > 1 {
        let _ = writeln!(
            out,
            "  extra_hosts: only {} is given to the builder (the classic build request carries one); left out: {}",
            spec.extra_hosts[0],
            spec.extra_hosts[1..].join(", ")
        );
    }
    let id = run_builder(engine, &spec, context, out)
        .await
        .map_err(failed)?;
    let reference = service.built_reference(stack, &id);
    for name in names(&reference, service, &spec) {
        engine
            .tag(&id, &name)
            .await
            .map_err(|e| failed(format!("{e:#}")))?;
    }
    let _ = writeln!(out, "built {stack}/{} as {reference}", service.name);
    Ok(Built { reference, id })
}

/// `build of STACK/SERVICE (FILE:LINE) failed: WHY`.
pub fn failure(stack: &str, service: &ServiceSpec, why: &str) -> anyhow::Error {
    let at = service
        .build
        .as_ref()
        .map(|b| b.at.as_str())
        .filter(|a| !a.is_empty());
    match at {
        Some(at) => anyhow!("build of {stack}/{} ({at}) failed: {why}", service.name),
        None => anyhow!("build of {stack}/{} failed: {why}", service.name),
    }
}

/// The names the result gets: its content-derived reference, `image:` as written
/// (a digest reference cannot be a tag and is skipped), `build.tags`.
fn names(reference: &str, service: &ServiceSpec, spec: &BuildSpec) -> Vec<String> {
    let mut out = vec![reference.to_string()];
    let written = std::iter::once(&service.image).chain(&spec.tags);
    for name in written {
        if !name.is_empty() && !name.contains('@') && !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

/// The request's query: what `build:` says, in the classic builder's terms.
fn options(spec: &BuildSpec, dockerfile: &str) -> BuildImageOptions<String> {
    BuildImageOptions {
        dockerfile: dockerfile.to_string(),
        extrahosts: spec.extra_hosts.first().cloned(),
        nocache: spec.no_cache,
        pull: spec.pull,
        rm: true,
        // Also on failure: a failed step must not leave its container on this machine.
        forcerm: true,
        buildargs: spec
            .args
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>(),
        shmsize: spec.shm_size,
        labels: spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>(),
        networkmode: spec.network.clone().unwrap_or_default(),
        platform: spec.platforms.first().cloned().unwrap_or_default(),
        target: spec.target.clone().unwrap_or_default(),
        version: BuilderVersion::BuilderV1,
        ..Default::default()
    }
}

/// Sends the context and follows the builder's messages; the image id, or the
/// builder's (or the engine's) own words.
async fn run_builder(
    engine: &Engine,
    spec: &BuildSpec,
    context: ContextTar,
    out: &mut (dyn Write + Send),
) -> Result<String, String> {
    let docker = engine.long_running();
    let opts = options(spec, &context.dockerfile);
    let mut messages = docker.build_image(opts, None, Some(context.tar.into()));
    let mut outcome = Outcome::default();
    while let Some(msg) = messages.next().await {
        match msg {
            Ok(info) => outcome.feed(&info, out)?,
            Err(e) => return Err(words(&e)),
        }
    }
    let _ = out.flush();
    if let Some(id) = outcome.id {
        return Ok(id);
    }
    // Engines that send no `aux` message still print `Successfully built SHORTID`.
    let short = outcome
        .short_id
        .ok_or_else(|| "the builder ended without naming an image".to_string())?;
    match engine.image(&short).await {
        Ok(Some(img)) => Ok(img.id),
        Ok(None) => Err(format!(
            "the builder named image {short}, which the engine does not have"
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// What the builder's messages said so far.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    /// From the `aux` message: `sha256:HEX`.
    id: Option<String>,
    /// From `Successfully built HEX12`.
    short_id: Option<String>,
}

impl Outcome {
    /// Takes one message: output is written to `out`, an error ends the build with the
    /// builder's own words.
    fn feed(&mut self, info: &BuildInfo, out: &mut (dyn Write + Send)) -> Result<(), String> {
        let detail = info.error_detail.as_ref().and_then(|d| d.message.clone());
        if let Some(error) = detail.or_else(|| info.error.clone()) {
            return Err(error.trim_end().to_string());
        }
        if let Some(text) = &info.stream {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            if let Some(short) = text.trim().strip_prefix("Successfully built ") {
                self.short_id = Some(short.trim().to_string());
            }
        }
        if let Some(status) = &info.status {
            let line = match &info.id {
                Some(id) => format!("{id}: {status}"),
                None => status.clone(),
            };
            let _ = writeln!(out, "{line}");
        }
        if let Some(id) = info.aux.as_ref().and_then(|a| a.id.clone()) {
            self.id = Some(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ErrorDetail, ImageId};
    use std::collections::BTreeMap;

    fn service(image: &str, build: BuildSpec) -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            image: image.into(),
            build: Some(build),
            ..Default::default()
        }
    }

    #[test]
    fn messages_stream_out_and_errors_are_the_builders_words() {
        let mut outcome = Outcome::default();
        let mut out = Vec::new();
        let step = BuildInfo {
            stream: Some("Step 1/2 : FROM busybox\n".into()),
            ..Default::default()
        };
        outcome.feed(&step, &mut out).unwrap();
        let done = BuildInfo {
            stream: Some("Successfully built 0123456789ab\n".into()),
            ..Default::default()
        };
        outcome.feed(&done, &mut out).unwrap();
        let aux = BuildInfo {
            aux: Some(ImageId {
                id: Some("sha256:0123456789abcdef".into()),
            }),
            ..Default::default()
        };
        outcome.feed(&aux, &mut out).unwrap();
        assert_eq!(
            outcome,
            Outcome {
                id: Some("sha256:0123456789abcdef".into()),
                short_id: Some("0123456789ab".into()),
            }
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Step 1/2 : FROM busybox\nSuccessfully built 0123456789ab\n"
        );
        let error = BuildInfo {
            error: Some("short".into()),
            error_detail: Some(ErrorDetail {
                code: Some(3),
                message: Some("The command '/bin/sh -c exit 3' returned a non-zero code: 3".into()),
            }),
            ..Default::default()
        };
        assert_eq!(
            outcome.feed(&error, &mut Vec::new()),
            Err("The command '/bin/sh -c exit 3' returned a non-zero code: 3".into())
        );
    }

    #[test]
    fn the_request_says_what_build_says() {
        let spec = BuildSpec {
            context: "/ctx".into(),
            args: BTreeMap::from([("V".into(), "1".into())]),
            target: Some("prod".into()),
            labels: BTreeMap::from([("team".into(), "a".into())]),
            network: Some("host".into()),
            extra_hosts: vec!["db:10.0.0.2".into(), "x:10.0.0.3".into()],
            shm_size: Some(1 << 20),
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            no_cache: true,
            pull: true,
            ..Default::default()
        };
        let o = options(&spec, "docker/Dockerfile");
        assert_eq!(o.dockerfile, "docker/Dockerfile");
        assert_eq!(o.buildargs.get("V").map(String::as_str), Some("1"));
        assert_eq!(o.target, "prod");
        assert_eq!(o.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(o.networkmode, "host");
        assert_eq!(o.extrahosts.as_deref(), Some("db:10.0.0.2"));
        assert_eq!(o.shmsize, Some(1 << 20));
        assert_eq!(o.platform, "linux/amd64");
        assert!(o.nocache && o.pull && o.rm && o.forcerm);
        assert_eq!(o.version, BuilderVersion::BuilderV1);
    }

    #[test]
    fn the_result_is_named_by_content_by_image_and_by_tags() {
        let build = BuildSpec {
            tags: vec!["web:dev".into(), "reg:5000/web:1".into()],
            ..Default::default()
        };
        let s = service("team/web:1.2", build.clone());
        let reference = s.built_reference("shop", "sha256:0123456789abcdef");
        assert_eq!(reference, "team/web:shoal-0123456789ab");
        assert_eq!(
            names(&reference, &s, &build),
            vec![
                "team/web:shoal-0123456789ab",
                "team/web:1.2",
                "web:dev",
                "reg:5000/web:1"
            ]
        );
        let s = service("", BuildSpec::default());
        let reference = s.built_reference("shop", "sha256:0123456789abcdef");
        assert_eq!(
            names(&reference, &s, &BuildSpec::default()),
            vec!["shop-web:shoal-0123456789ab"]
        );
    }

    #[test]
    fn failures_say_where_build_is_written() {
        let s = service(
            "",
            BuildSpec {
                at: "compose.yaml:12".into(),
                ..Default::default()
            },
        );
        assert_eq!(
            failure("shop", &s, "no space left").to_string(),
            "build of shop/web (compose.yaml:12) failed: no space left"
        );
    }
}
