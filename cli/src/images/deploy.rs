//! The image steps of `shoal deploy`, run after the stack is loaded and before anything
//! is sent to the cluster:
//!
//! 1. a `build:` service whose context is not a directory on this machine is refused
//!    (exit 2, `FILE:LINE: service web: build context /abs/x is not there`);
//! 2. every `build:` service is built on this machine's engine, and its spec then runs
//!    the content-derived reference with `build` cleared, so the stored spec does not
//!    depend on where the context was (a failed build exits 1 with the builder's words);
//! 3. the cluster says where each image is (`Control.ImagesAvailable`); a built image
//!    the store lacks is pushed; any other image must be in the store or on every
//!    node, else on this machine's engine (pushed), else on some node (the others pull
//!    it) or pullable here (then the nodes can pull it too; not tried for
//!    `pull_policy: never`); an image found nowhere fails the deploy, naming where it
//!    was looked for, before any push.
//!
//! The engine is connected only when one of these steps needs it, so a deploy whose
//! images are all in the cluster works on a machine without Docker.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context as _;
use shoal_proto::pb;
use shoal_proto::spec::{PullPolicy, StackSpec};

use super::available::{decide, Need};
use super::engine::Engine;
use crate::client::Client;
use crate::error::UsageError;

/// This machine's engine, connected at its first use (and only once).
pub struct LazyEngine {
    /// A `DOCKER_HOST` value; `None`: the default socket.
    host: Option<String>,
    engine: Option<Result<Engine, String>>,
}

impl LazyEngine {
    /// The engine `DOCKER_HOST` names, else the default socket.
    pub fn from_env() -> LazyEngine {
        LazyEngine::at(super::engine::docker_host())
    }

    pub fn at(host: Option<String>) -> LazyEngine {
        LazyEngine { host, engine: None }
    }

    /// The engine, or why it cannot be used (the same answer every time).
    pub async fn get(&mut self) -> Result<&Engine, String> {
        if self.engine.is_none() {
            let connected = Engine::connect_to(self.host.clone())
                .await
                .map_err(|e| format!("{e:#}"));
            self.engine = Some(connected);
        }
        match self.engine.as_ref() {
            Some(Ok(engine)) => Ok(engine),
            Some(Err(why)) => Err(why.clone()),
            None => Err("this machine's Docker engine was not connected".into()),
        }
    }

    /// Whether the engine was ever asked for (tests check a deploy did without it).
    #[cfg(test)]
    pub fn was_used(&self) -> bool {
        self.engine.is_some()
    }
}

/// Runs the image steps on `stack`, changing its built services' specs in place.
pub async fn prepare(
    stack: &mut StackSpec,
    client: &mut Client,
    engine: &mut LazyEngine,
) -> anyhow::Result<()> {
    refuse_unbuildable(stack)?;
    let built = build_all(stack, engine).await?;
    let images: Vec<String> = stack
        .services
        .values()
        .map(|s| s.image.clone())
        .filter(|i| !i.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if images.is_empty() {
        return Ok(());
    }
    let req = pb::ImagesAvailableRequest {
        images: images.clone(),
    };
    let places = client
        .call(|mut c| {
            let req = req.clone();
            async move { c.images_available(req).await }
        })
        .await
        .context("ask the cluster where the stack's images are")?
        .images;
    // `pull_policy: never` forbids a registry: such an image is not pulled here either.
    let never_pull: BTreeSet<&str> = stack
        .services
        .values()
        .filter(|s| s.pull_policy == PullPolicy::Never)
        .map(|s| s.image.as_str())
        .collect();
    let mut pushes = Vec::new();
    let mut missing = Vec::new();
    for (image, need) in decide(&images, &built, &places) {
        match need {
            Need::Available => {}
            Need::PushBuilt => pushes.push(image),
            Need::PushIfLocal => match engine.get().await {
                Ok(e) if matches!(e.image(&image).await, Ok(Some(_))) => pushes.push(image),
                _ => eprintln!(
                    "image {image} is on some nodes only: the others pull it from its registry"
                ),
            },
            Need::LookLocally => {
                match look_locally(engine, &image, !never_pull.contains(image.as_str())).await {
                    Ok(Local::Push) => pushes.push(image),
                    Ok(Local::Pulled) => {
                        eprintln!(
                            "pulled {image} on this machine: the nodes pull it from its registry"
                        )
                    }
                    Err(why) => missing.push(why),
                }
            }
        }
    }
    if !missing.is_empty() {
        anyhow::bail!("{}\nnothing was deployed", missing.join("\n"));
    }
    for image in pushes {
        let engine = engine
            .get()
            .await
            .map_err(|why| anyhow::anyhow!("push {image}: {why}"))?;
        let saved = super::save::save(engine, &image).await?;
        let pushed = super::push::push(client, &saved).await?;
        eprintln!("{pushed}");
    }
    Ok(())
}

/// A `build:` service whose context is not a directory here: the user must fix the
/// file or the checkout (exit 2). Every such service is named.
pub fn refuse_unbuildable(stack: &StackSpec) -> Result<(), UsageError> {
    let mut problems = Vec::new();
    for svc in stack.services.values() {
        let Some(build) = &svc.build else { continue };
        let dir = Path::new(&build.context);
        let why = if !build.context.starts_with('/') {
            "is a URL or git context: shoal deploy builds only from a directory on this machine"
        } else if !dir.exists() {
            "is not there"
        } else if !dir.is_dir() {
            "is not a directory"
        } else if build.context_missing {
            "was not there when the Compose file was loaded"
        } else {
            continue;
        };
        let at = if build.at.is_empty() {
            String::new()
        } else {
            format!("{}: ", build.at)
        };
        problems.push(format!(
            "{at}service {}: build context {} {why}",
            svc.name, build.context
        ));
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(UsageError(problems.join("\n"))),
    }
}

/// Builds every `build:` service; their specs then run the built reference.
async fn build_all(
    stack: &mut StackSpec,
    engine: &mut LazyEngine,
) -> anyhow::Result<BTreeSet<String>> {
    let mut built = BTreeSet::new();
    let stack_name = stack.name.clone();
    for svc in stack.services.values_mut() {
        if svc.build.is_none() {
            continue;
        }
        let engine = engine
            .get()
            .await
            .map_err(|why| super::build::failure(&stack_name, svc, &why))?;
        let result = super::build::build(engine, &stack_name, svc, &mut std::io::stderr()).await?;
        svc.image = result.reference.clone();
        svc.build = None;
        built.insert(result.reference);
    }
    Ok(built)
}

/// What this machine's engine could do for an image the cluster lacks.
enum Local {
    /// It has it: push it.
    Push,
    /// It pulled it from its registry: the nodes can as well.
    Pulled,
}

/// Looks for `image` on this machine's engine, then (when `may_pull`) tries to pull it
/// there. The error says every place it was looked for.
async fn look_locally(
    engine: &mut LazyEngine,
    image: &str,
    may_pull: bool,
) -> Result<Local, String> {
    let engine = engine.get().await.map_err(|why| {
        format!("image {image} is not in the cluster's store nor on any node, and {why}")
    })?;
    let nowhere = |then: String| {
        format!(
            "image {image} is not on this machine's engine ({}), not in the cluster's store, not on any node, and {then}",
            engine.place()
        )
    };
    match engine.image(image).await {
        Ok(Some(_)) => return Ok(Local::Push),
        Ok(None) => {}
        Err(e) => return Err(nowhere(format!("{e:#}"))),
    }
    if !may_pull {
        return Err(nowhere("pull_policy: never forbids pulling it".into()));
    }
    match engine.pull(image).await {
        Ok(()) => Ok(Local::Pulled),
        Err(words) => Err(nowhere(format!("pulling it failed: {words}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::spec::{BuildSpec, ServiceSpec};

    fn stack(services: Vec<ServiceSpec>) -> StackSpec {
        StackSpec {
            name: "shop".into(),
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            ..Default::default()
        }
    }

    fn built_from(name: &str, context: &str, at: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            build: Some(BuildSpec {
                context: context.into(),
                at: at.into(),
                context_missing: !Path::new(context).is_dir(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn contexts_that_are_not_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let s = stack(vec![
            built_from("api", "https://github.com/x/y.git", "compose.yaml:3"),
            built_from("ok", &dir.path().display().to_string(), "compose.yaml:6"),
            built_from("web", "/nonexistent/shoal/x", "compose.yaml:12"),
            built_from("worker", &file.display().to_string(), ""),
        ]);
        let err = refuse_unbuildable(&s).unwrap_err().0;
        assert_eq!(
            err,
            format!(
                "compose.yaml:3: service api: build context https://github.com/x/y.git is a URL or git context: shoal deploy builds only from a directory on this machine\n\
                 compose.yaml:12: service web: build context /nonexistent/shoal/x is not there\n\
                 service worker: build context {} is not a directory",
                file.display()
            )
        );
        assert!(refuse_unbuildable(&stack(vec![ServiceSpec {
            name: "plain".into(),
            image: "redis:7".into(),
            ..Default::default()
        }]))
        .is_ok());
    }
}
