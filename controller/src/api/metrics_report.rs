//! `MetricsReport` (agent -> leader, every [`shoal_proto::autoscale::INTERVAL_MS`]): what
//! one node measured of the `x-shoal-autoscale` metrics of its replicas, converted into
//! the domain types that [`crate::autoscale::Signals`] keeps. The only place that reads
//! these wire structs.

use shoal_proto::pb;

use crate::api::convert::Invalid;

/// One service's metrics as one node measured them.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceReport {
    pub stack: String,
    pub service: String,
    /// The generation of the spec the metrics were read with: its `metrics` is what the
    /// indexes of [`ServiceReport::values`] refer to.
    pub generation: u64,
    pub values: Vec<Measured>,
}

/// One metric (measured on nodes) of one service on one node: aggregates over the node's
/// replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The metric's index in the service's `x-shoal-autoscale.metrics`.
    pub index: usize,
    /// The node's running replicas of the service.
    pub replicas: u32,
    /// How many of them were read.
    pub read: u32,
    /// gauge: the values summed; cpu/memory: the replicas' use as fractions of their
    /// limit, summed.
    pub sum: f64,
    /// histogram: `(le, growth over window_ms)` of each cumulative bucket, summed over
    /// the replicas read (`le` may be infinite).
    pub buckets: Vec<(f64, f64)>,
    /// histogram: how long the growth covers.
    pub window_ms: u64,
    /// Why a replica could not be read (the first such reason).
    pub error: Option<String>,
}

/// Every service of a node's report; refused whole when one of them does not make sense
/// (an agent bug, not something to average in).
pub fn reports_from_pb(m: &pb::MetricsReport) -> Result<Vec<ServiceReport>, Invalid> {
    let mut out: Vec<ServiceReport> = Vec::with_capacity(m.services.len());
    for s in &m.services {
        let report = ServiceReport::try_from(s)?;
        if out
            .iter()
            .any(|r| r.stack == report.stack && r.service == report.service)
        {
            return Err(invalid(format!(
                "{}/{} reported twice",
                report.stack, report.service
            )));
        }
        out.push(report);
    }
    Ok(out)
}

impl TryFrom<&pb::ServiceMetrics> for ServiceReport {
    type Error = Invalid;

    fn try_from(s: &pb::ServiceMetrics) -> Result<Self, Invalid> {
        if s.stack.is_empty() || s.service.is_empty() {
            return Err(invalid(format!(
                "a service without a stack or a name ({:?}/{:?})",
                s.stack, s.service
            )));
        }
        let key = format!("{}/{}", s.stack, s.service);
        let mut values: Vec<Measured> = Vec::with_capacity(s.values.len());
        for v in &s.values {
            let value = measured(&key, v)?;
            if values.iter().any(|o| o.index == value.index) {
                return Err(invalid(format!(
                    "{key}: metric {} reported twice",
                    value.index
                )));
            }
            values.push(value);
        }
        Ok(ServiceReport {
            stack: s.stack.clone(),
            service: s.service.clone(),
            generation: s.generation,
            values,
        })
    }
}

fn measured(key: &str, v: &pb::MetricValue) -> Result<Measured, Invalid> {
    let index = v.index;
    if v.read > v.replicas {
        return Err(invalid(format!(
            "{key}: metric {index}: {} of {} replicas read",
            v.read, v.replicas
        )));
    }
    if !v.sum.is_finite() {
        return Err(invalid(format!("{key}: metric {index}: sum {}", v.sum)));
    }
    let buckets = v
        .buckets
        .iter()
        .map(|b| {
            if b.le.is_nan() || !b.count.is_finite() || b.count < 0.0 {
                return Err(invalid(format!(
                    "{key}: metric {index}: bucket le={} count={}",
                    b.le, b.count
                )));
            }
            Ok((b.le, b.count))
        })
        .collect::<Result<Vec<_>, Invalid>>()?;
    Ok(Measured {
        index: index as usize,
        replicas: v.replicas,
        read: v.read,
        sum: v.sum,
        buckets,
        window_ms: v.window_ms,
        error: (!v.error.is_empty()).then(|| v.error.clone()),
    })
}

fn invalid(why: String) -> Invalid {
    Invalid {
        what: "metrics report",
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(index: u32) -> pb::MetricValue {
        pb::MetricValue {
            index,
            replicas: 2,
            read: 1,
            sum: 0.5,
            buckets: vec![
                pb::Bucket {
                    le: 0.1,
                    count: 3.0,
                },
                pb::Bucket {
                    le: f64::INFINITY,
                    count: 4.0,
                },
            ],
            window_ms: 60_000,
            error: "GET http://10.0.0.2:9100/metrics: connection refused".into(),
        }
    }

    fn service(values: Vec<pb::MetricValue>) -> pb::ServiceMetrics {
        pb::ServiceMetrics {
            stack: "app".into(),
            service: "infer".into(),
            generation: 3,
            values,
        }
    }

    #[test]
    fn converts_a_report() {
        let m = pb::MetricsReport {
            services: vec![service(vec![
                value(0),
                pb::MetricValue {
                    index: 2,
                    ..Default::default()
                },
            ])],
        };
        let got = reports_from_pb(&m).unwrap();
        assert_eq!(
            got,
            vec![ServiceReport {
                stack: "app".into(),
                service: "infer".into(),
                generation: 3,
                values: vec![
                    Measured {
                        index: 0,
                        replicas: 2,
                        read: 1,
                        sum: 0.5,
                        buckets: vec![(0.1, 3.0), (f64::INFINITY, 4.0)],
                        window_ms: 60_000,
                        error: Some("GET http://10.0.0.2:9100/metrics: connection refused".into()),
                    },
                    Measured {
                        index: 2,
                        replicas: 0,
                        read: 0,
                        sum: 0.0,
                        buckets: vec![],
                        window_ms: 0,
                        error: None,
                    }
                ]
            }]
        );
    }

    #[test]
    fn refuses_what_makes_no_sense() {
        let cases: Vec<(pb::MetricsReport, &str)> = vec![
            (
                pb::MetricsReport {
                    services: vec![service(vec![value(0), value(0)])],
                },
                "app/infer: metric 0 reported twice",
            ),
            (
                pb::MetricsReport {
                    services: vec![service(vec![]), service(vec![])],
                },
                "app/infer reported twice",
            ),
            (
                pb::MetricsReport {
                    services: vec![service(vec![pb::MetricValue {
                        read: 3,
                        ..value(1)
                    }])],
                },
                "app/infer: metric 1: 3 of 2 replicas read",
            ),
            (
                pb::MetricsReport {
                    services: vec![service(vec![pb::MetricValue {
                        sum: f64::NAN,
                        ..value(1)
                    }])],
                },
                "app/infer: metric 1: sum NaN",
            ),
            (
                pb::MetricsReport {
                    services: vec![service(vec![pb::MetricValue {
                        buckets: vec![pb::Bucket {
                            le: f64::NAN,
                            count: 1.0,
                        }],
                        ..value(1)
                    }])],
                },
                "app/infer: metric 1: bucket le=NaN count=1",
            ),
            (
                pb::MetricsReport {
                    services: vec![pb::ServiceMetrics {
                        stack: String::new(),
                        ..service(vec![])
                    }],
                },
                "a service without a stack or a name (\"\"/\"infer\")",
            ),
        ];
        for (m, why) in cases {
            let e = reports_from_pb(&m).unwrap_err();
            assert_eq!(e.to_string(), format!("invalid metrics report: {why}"));
        }
    }
}
