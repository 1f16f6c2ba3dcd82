//! The autoscaler's decisions in the replicated state (issue 16): `Command::Autoscale`
//! changes the count only while it is still the one decided from (no step lost or
//! repeated across a leader change), within min..=max; a redeploy keeps the decided
//! count within the new bounds and rolls nothing out; `shoal scale` is refused.

mod common;

use common::*;
use shoal_controller::state::*;
use shoal_proto::autoscale::{Autoscale, Behavior, Metric};
use shoal_proto::spec::ServiceSpec;
use shoal_proto::task::Desired;

fn autoscaled(min: u64, max: u64) -> ServiceSpec {
    let mut spec = svc("web", min);
    spec.autoscale = Some(Autoscale {
        min,
        max,
        metrics: vec![Metric::Cpu { target: 0.7 }],
        scale_up: Behavior::up(),
        scale_down: Behavior::down(),
    });
    spec
}

fn scale(from: u64, to: u64, at_ms: u64) -> Command {
    Command::Autoscale {
        service: "app/web".into(),
        from,
        to,
        cause: format!("cpu 140%/70% above target ({from} to {to})"),
        at_ms,
    }
}

fn web(s: &ClusterState) -> &Service {
    &s.services["app/web"]
}

fn running(s: &ClusterState) -> usize {
    s.tasks
        .values()
        .filter(|t| t.desired == Desired::Running)
        .count()
}

#[test]
fn a_decision_applies_once_and_only_from_the_count_it_was_taken_on() {
    let mut s = deployed(vec![node("n1", 8.0, 8192)], vec![autoscaled(2, 5)]);
    settle(&mut s, 0);
    assert_eq!(running(&s), 2);

    assert_eq!(s.apply(&scale(2, 4, 10)).error, None);
    assert_eq!(web(&s).replicas, 4);
    let d = web(&s)
        .autoscaled
        .clone()
        .expect("the decision is recorded");
    assert_eq!((d.from, d.to, d.at_ms), (2, 4, 10));
    assert!(d.cause.contains("cpu 140%/70%"), "{}", d.cause);
    settle(&mut s, 10);
    assert_eq!(running(&s), 4);

    // The same decision proposed again (an old leader's, after a leader change).
    let again = s.apply(&scale(2, 4, 11));
    assert!(
        again.error.as_deref().unwrap_or("").contains("stale"),
        "{again:?}"
    );
    assert_eq!(web(&s).replicas, 4);

    // A decision beyond the bounds is held to them.
    assert_eq!(s.apply(&scale(4, 9, 12)).error, None);
    assert_eq!(web(&s).replicas, 5);
    assert_eq!(s.apply(&scale(5, 0, 13)).error, None);
    assert_eq!(web(&s).replicas, 2);
}

#[test]
fn a_redeploy_keeps_the_decided_count_within_new_bounds_and_rolls_nothing_out() {
    let mut s = deployed(vec![node("n1", 8.0, 8192)], vec![autoscaled(2, 10)]);
    settle(&mut s, 0);
    s.apply(&scale(2, 6, 10));
    settle(&mut s, 10);
    let generation = web(&s).generation;

    // The same file again: 6 stays, no new generation.
    redeploy(&mut s, autoscaled(2, 10), 0);
    assert_eq!(web(&s).replicas, 6);
    assert_eq!(web(&s).generation, generation);

    // A lower max: the count comes down to it, still without a rollout.
    redeploy(&mut s, autoscaled(2, 4), 0);
    assert_eq!(web(&s).replicas, 4);
    assert_eq!(web(&s).generation, generation, "bounds change no container");
    settle(&mut s, 20);
    assert_eq!(running(&s), 4);

    // No longer autoscaled: the file's count, and the decision is forgotten.
    redeploy(&mut s, svc("web", 3), 0);
    assert_eq!(web(&s).replicas, 3);
    assert!(web(&s).autoscaled.is_none());
    assert_eq!(web(&s).generation, generation);
}

#[test]
fn a_changed_replica_count_in_the_file_scales_without_a_rollout() {
    let mut s = deployed(vec![node("n1", 8.0, 8192)], vec![svc("web", 2)]);
    settle(&mut s, 0);
    let generation = web(&s).generation;
    redeploy(&mut s, svc("web", 3), 0);
    assert_eq!(web(&s).replicas, 3);
    assert_eq!(web(&s).generation, generation);
    assert_eq!(web(&s).spec.replicas, 3, "the stored spec is the file's");
    let mut changed = svc("web", 3);
    changed.image = "img:2".into();
    redeploy(&mut s, changed, 0);
    assert_eq!(
        web(&s).generation,
        generation + 1,
        "a real change still rolls out"
    );
}

#[test]
fn scale_is_refused_on_an_autoscaled_service_and_autoscale_on_another() {
    let mut s = deployed(
        vec![node("n1", 8.0, 8192)],
        vec![autoscaled(2, 5), svc("db", 1)],
    );
    let refused = s.apply(&Command::Scale {
        service: "app/web".into(),
        replicas: 3,
    });
    let why = refused.error.unwrap_or_default();
    assert!(
        why.contains("autoscaled between 2 and 5") && why.contains("x-shoal-autoscale"),
        "{why}"
    );
    assert_eq!(web(&s).replicas, 2);
    let not = s.apply(&Command::Autoscale {
        service: "app/db".into(),
        from: 1,
        to: 2,
        cause: String::new(),
        at_ms: 0,
    });
    assert!(
        not.error.unwrap_or_default().contains("not autoscaled"),
        "a decision for a service that is not autoscaled is refused"
    );
    assert_eq!(
        Command::Autoscale {
            service: String::new(),
            from: 0,
            to: 0,
            cause: String::new(),
            at_ms: 0
        }
        .min_protocol(),
        2,
        "older controllers cannot read it"
    );
}
