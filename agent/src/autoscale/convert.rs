//! The node's metrics report on the wire (`AgentMessage.metrics`).

use shoal_proto::pb;

use super::report::ServiceReport;

pub fn metrics_message(reports: &[ServiceReport]) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Metrics(pb::MetricsReport {
            services: reports
                .iter()
                .map(|s| pb::ServiceMetrics {
                    stack: s.stack.clone(),
                    service: s.service.clone(),
                    generation: s.generation,
                    values: s
                        .values
                        .iter()
                        .map(|v| pb::MetricValue {
                            index: v.index,
                            replicas: v.replicas,
                            read: v.read,
                            sum: v.sum,
                            buckets: v
                                .buckets
                                .iter()
                                .map(|(le, count)| pb::Bucket {
                                    le: *le,
                                    count: *count,
                                })
                                .collect(),
                            window_ms: v.window_ms,
                            error: v.error.clone().unwrap_or_default(),
                        })
                        .collect(),
                })
                .collect(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscale::report::MetricReport;

    #[test]
    fn every_figure_reaches_the_wire() {
        let msg = metrics_message(&[ServiceReport {
            stack: "shop".into(),
            service: "web".into(),
            generation: 4,
            values: vec![MetricReport {
                index: 2,
                replicas: 3,
                read: 2,
                sum: 0.0,
                buckets: vec![(0.5, 4.0), (f64::INFINITY, 9.0)],
                window_ms: 120_000,
                error: Some(
                    "web slot 3: GET http://10.208.1.5:9100/metrics: connection refused".into(),
                ),
            }],
        }]);
        let Some(pb::agent_message::Msg::Metrics(m)) = msg.msg else {
            panic!("a metrics report: {msg:?}");
        };
        assert_eq!(
            m,
            pb::MetricsReport {
                services: vec![pb::ServiceMetrics {
                    stack: "shop".into(),
                    service: "web".into(),
                    generation: 4,
                    values: vec![pb::MetricValue {
                        index: 2,
                        replicas: 3,
                        read: 2,
                        sum: 0.0,
                        buckets: vec![
                            pb::Bucket {
                                le: 0.5,
                                count: 4.0
                            },
                            pb::Bucket {
                                le: f64::INFINITY,
                                count: 9.0
                            },
                        ],
                        window_ms: 120_000,
                        error: "web slot 3: GET http://10.208.1.5:9100/metrics: connection refused"
                            .into(),
                    }],
                }],
            }
        );
    }
}
