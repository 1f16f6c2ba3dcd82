//! The leader's autoscaling loop: every [`INTERVAL_MS`], for each autoscaled service,
//! the nodes' reports ([`Signals`]) and the Prometheus answers become one [`Reading`] per
//! metric, the [`Autoscaler`] decides, and a changed count is written through Raft
//! (`Command::Autoscale`, applied only while the count is still the one decided from).
//!
//! Only the leader decides. A controller that becomes leader starts with empty
//! histories (it does not scale down before it has watched a whole scale-down window);
//! what was decided before is in the replicated state, so nothing is lost or repeated.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use shoal_proto::autoscale::{Autoscale, Metric, INTERVAL_MS};
use shoal_proto::task::Desired;
use tokio_util::sync::CancellationToken;

use crate::api::control::now_ms;
use crate::api::Shared;
use crate::autoscale::{prometheus, Autoscaler, Reading, Signals};
use crate::state::{service_key, Command, ServiceKey};

/// How long the leader waits for a Prometheus server's answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the agent sessions and the leader's loop share: the nodes' reports, and what
/// the last pass read (for `shoal services`).
#[derive(Debug, Default)]
pub struct Live {
    pub signals: Signals,
    readings: Mutex<HashMap<ServiceKey, Vec<String>>>,
}

impl Live {
    /// What each metric of `service` read at the last pass (empty: not the leader, or no
    /// pass yet).
    pub fn readings(&self, service: &str) -> Vec<String> {
        self.lock().get(service).cloned().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceKey, Vec<String>>> {
        self.readings.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs until `shutdown`; decides only while this controller leads.
pub async fn run(ctx: Shared, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The histories, and since when this controller leads.
    let mut leading: Option<(Autoscaler, u64)> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let is_leader = ctx.node.raft.metrics().borrow().current_leader == Some(ctx.node.id);
        if !is_leader {
            if leading.take().is_some() {
                ctx.autoscale.lock().clear();
            }
            continue;
        }
        let (scaler, since) = leading.get_or_insert_with(|| (Autoscaler::new(), now_ms()));
        pass(&ctx, scaler, *since).await;
    }
}

/// What a pass needs of one autoscaled service, read under the state's lock (no copy
/// of the whole state every interval, and nothing at all without autoscaled services).
struct Target {
    key: ServiceKey,
    stack: String,
    name: String,
    spec: Autoscale,
    replicas: u64,
    generation: u64,
    /// Its replicas that run now, as the state says.
    running: u64,
}

fn targets(ctx: &Shared) -> Vec<Target> {
    let state = ctx.node.state.read();
    let mut out: Vec<Target> = state
        .services
        .values()
        .filter(|s| !s.removing)
        .filter_map(|s| {
            Some(Target {
                key: s.key(),
                stack: s.stack.clone(),
                name: s.name.clone(),
                spec: s.spec.autoscale.clone()?,
                replicas: s.replicas,
                generation: s.generation,
                running: 0,
            })
        })
        .collect();
    if out.is_empty() {
        return out;
    }
    let index: HashMap<ServiceKey, usize> = out
        .iter()
        .enumerate()
        .map(|(i, t)| (t.key.clone(), i))
        .collect();
    for t in state.tasks.values() {
        if t.desired != Desired::Running || !t.state.is_up() {
            continue;
        }
        if let Some(i) = index.get(&service_key(&t.stack, &t.service)) {
            out[*i].running += 1;
        }
    }
    out
}

/// One decision for every autoscaled service.
async fn pass(ctx: &Shared, scaler: &mut Autoscaler, since: u64) {
    let services = targets(ctx);
    scaler.retain(|key| services.iter().any(|s| s.key == key));
    // Services removed (or no longer autoscaled) since the last pass: forget them.
    let gone: Vec<ServiceKey> = ctx
        .autoscale
        .lock()
        .keys()
        .filter(|key| !services.iter().any(|s| s.key == **key))
        .cloned()
        .collect();
    for key in gone {
        ctx.autoscale.lock().remove(&key);
        if let Some((stack, service)) = key.split_once('/') {
            ctx.autoscale.signals.forget_service(stack, service);
        }
    }
    for svc in services {
        let key = &svc.key;
        let now = now_ms();
        let readings = readings(ctx, &svc, now).await;
        let decision = scaler.evaluate(key, &svc.spec, svc.replicas, &readings, now, since);
        ctx.autoscale
            .lock()
            .insert(key.clone(), decision.readings.clone());
        tracing::debug!(service = %key, current = svc.replicas, desired = decision.desired, cause = %decision.cause, "autoscale decision");
        if decision.desired == svc.replicas {
            continue;
        }
        let cmd = Command::Autoscale {
            service: key.clone(),
            from: svc.replicas,
            to: decision.desired,
            cause: decision.cause.clone(),
            at_ms: now,
        };
        match ctx.propose(cmd).await {
            Ok(r) => match r.error {
                None => tracing::info!(
                    service = %key,
                    from = svc.replicas,
                    to = decision.desired,
                    cause = %decision.cause,
                    "autoscaled"
                ),
                // The count moved since the pass began (a deploy): decided again next pass.
                Some(e) => tracing::debug!(service = %key, error = %e, "autoscale not applied"),
            },
            Err(e) => {
                tracing::warn!(service = %key, error = %e.message(), "autoscale not written; retrying next pass")
            }
        }
    }
}

/// One reading per metric of `svc`: the nodes' totals, or the Prometheus server's answer.
async fn readings(ctx: &Shared, svc: &Target, now: u64) -> Vec<Reading> {
    let totals =
        ctx.autoscale
            .signals
            .readings(&svc.stack, &svc.name, &svc.spec, svc.generation, now);
    let queries = svc.spec.metrics.iter().map(|m| async move {
        match m {
            Metric::Prometheus { url, query, .. } => Some(Reading::from_prometheus(
                prometheus::query(url, query, QUERY_TIMEOUT).await,
            )),
            _ => None,
        }
    });
    let answers = futures::future::join_all(queries).await;
    svc.spec
        .metrics
        .iter()
        .zip(answers)
        .enumerate()
        .map(|(i, (m, answer))| {
            answer.unwrap_or_else(|| {
                Reading::from_totals(m, totals.get(i).and_then(Option::as_ref), svc.running)
            })
        })
        .collect()
}
