//! `shoal rebalance SERVICE [--detach] [--timeout SECS]`: ask the reconciler to even out
//! a service's replicas across nodes, and wait (bounded) until it says it is done.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use shoal_proto::pb::{RebalanceReply, RebalanceRequest};

use super::Ctx;
use crate::args::RebalanceArgs;
use crate::output;

const POLL: Duration = Duration::from_millis(250);

pub async fn run(args: RebalanceArgs, ctx: &mut Ctx) -> anyhow::Result<()> {
    let req = RebalanceRequest {
        service: args.service.clone(),
    };
    let started = ctx
        .client
        .call(|mut c| {
            let req = req.clone();
            async move { c.rebalance(req).await }
        })
        .await
        .with_context(|| format!("rebalance {}", args.service))?;
    let before = sorted(&started);
    let mut last = started;
    if !args.detach {
        let bound = Duration::from_secs(args.timeout);
        let start = Instant::now();
        while last.rebalancing {
            anyhow::ensure!(
                start.elapsed() < bound,
                "{} is still rebalancing after {}s (it goes on; follow it with `shoal ps`): \
                 replicas by node {}",
                last.service,
                args.timeout,
                spread(&sorted(&last))
            );
            tokio::time::sleep(POLL).await;
            last = ctx
                .client
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.rebalance_status(req).await }
                })
                .await
                .with_context(|| format!("follow the rebalance of {}", args.service))?;
        }
    }
    let after = sorted(&last);
    let json = json!({
        "service": last.service,
        "rebalancing": last.rebalancing,
        "before": before,
        "after": after,
    });
    output::emit(ctx.format, json, || {
        if last.rebalancing {
            format!(
                "{} rebalancing: follow it with `shoal ps` (replicas by node {})\n",
                last.service,
                spread(&after)
            )
        } else {
            format!(
                "{} rebalanced: replicas by node {} (was {})\n",
                last.service,
                spread(&after),
                spread(&before)
            )
        }
    })
}

fn sorted(r: &RebalanceReply) -> BTreeMap<String, u64> {
    r.replicas_by_node
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// `a=2 b=2 c=2`.
fn spread(by_node: &BTreeMap<String, u64>) -> String {
    if by_node.is_empty() {
        return "(none running)".into();
    }
    by_node
        .iter()
        .map(|(n, c)| format!("{n}={c}"))
        .collect::<Vec<_>>()
        .join(" ")
}
