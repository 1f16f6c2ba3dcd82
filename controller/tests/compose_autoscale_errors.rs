//! Errors of `x-shoal-autoscale` in the Compose loader: each names the file, line and
//! key and says what to write.

mod autoscale_yaml;

use autoscale_yaml::*;

#[test]
fn bounds_errors() {
    let a = "services.web.x-shoal-autoscale";
    error_at(
        &with_limits("max: 3\nmetrics: [{cpu: 50%}]\n"),
        a,
        7,
        "missing required key `min`: add min: N",
    );
    error_at(
        &with_limits("min: 3\nmetrics: [{cpu: 50%}]\n"),
        a,
        7,
        "missing required key `max`: add max: N",
    );
    error_at(
        &with_limits("min: 1\nmax: 3\n"),
        a,
        7,
        "missing required key `metrics`",
    );
    error_at(
        &with_limits("min: 0\nmax: 3\nmetrics: [{cpu: 50%}]\n"),
        &format!("{a}.min"),
        8,
        "min: 0 is not supported yet",
    );
    error_at(
        &with_limits("min: 0\nmax: 3\nmetrics: [{cpu: 50%}]\n"),
        &format!("{a}.min"),
        8,
        "use min: 1 or more",
    );
    error_at(
        &with_limits("min: two\nmax: 3\nmetrics: [{cpu: 50%}]\n"),
        &format!("{a}.min"),
        8,
        "must be a whole number of replicas, e.g. 2, not `two`",
    );
    error_at(
        &with_limits("min: 1.5\nmax: 3\nmetrics: [{cpu: 50%}]\n"),
        &format!("{a}.min"),
        8,
        "must be a whole number",
    );
    error_at(
        &with_limits("min: 4\nmax: 3\nmetrics: [{cpu: 50%}]\n"),
        &format!("{a}.max"),
        9,
        "must be at least min (4), not 3: use max: 4 or more",
    );
    error_at(
        &with_limits("min: 1\nmax: 3\nmetrics: [{cpu: 50%}]\nmaximum: 4\n"),
        &format!("{a}.maximum"),
        11,
        "unknown x-shoal-autoscale key `maximum`: use {min: N, max: N",
    );
    error_at(
        "services:\n  web:\n    image: busybox\n    x-shoal-autoscale: 3\n",
        a,
        4,
        "must be a mapping, not an integer: use {min: N, max: N",
    );
}

#[test]
fn only_replicated_services_autoscale() {
    for mode in ["global", "replicated-job", "global-job"] {
        let yaml = format!(
            "services:\n  web:\n    image: busybox\n    deploy: {{mode: {mode}}}\n    x-shoal-autoscale:\n      min: 1\n      max: 3\n      metrics: [{{scrape: {{port: 9100, gauge: q, per_replica: 1}}}}]\n"
        );
        error_at(
            &yaml,
            "services.web.x-shoal-autoscale",
            5,
            &format!("only replicated services autoscale, and this one is deploy.mode: {mode}"),
        );
    }
}

#[test]
fn metrics_list_errors() {
    let m = "services.web.x-shoal-autoscale.metrics";
    error_at(
        &with_limits("min: 1\nmax: 3\nmetrics: []\n"),
        m,
        10,
        "must list at least one metric: scrape, cpu, memory or prometheus",
    );
    error_at(
        &with_limits("min: 1\nmax: 3\nmetrics: {cpu: 50%}\n"),
        m,
        10,
        "must be a list, not a mapping: e.g. metrics: [{cpu: 70%}]",
    );
    error_at(
        &with_metric("cpu: 70%\nmemory: 80%"),
        &format!("{m}[0]"),
        12,
        "has both `cpu` and `memory`: give each metric its own list entry",
    );
    error_at(
        &with_metric("gpu: 50%"),
        &format!("{m}[0].gpu"),
        11,
        "unknown metric `gpu`: use scrape, cpu, memory or prometheus",
    );
    error_at(
        &with_limits("min: 1\nmax: 3\nmetrics:\n  - cpu\n"),
        &format!("{m}[0]"),
        11,
        "must be a mapping with one of scrape, cpu, memory or prometheus, not `cpu`",
    );
}

#[test]
fn scrape_errors() {
    let s = "services.web.x-shoal-autoscale.metrics[0].scrape";
    let block = |lines: &str| {
        with_metric(&format!(
            "scrape:\n{}",
            lines
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        ))
    };
    // `scrape:` is at line 11, its keys from line 12 on.
    error_at(
        &block("gauge: q\nper_replica: 1"),
        s,
        12,
        "missing required key `port`: add port: N",
    );
    error_at(
        &block("port: 0\ngauge: q\nper_replica: 1"),
        &format!("{s}.port"),
        12,
        "must be a port from 1 to 65535, not `0`",
    );
    error_at(
        &block("port: 70000\ngauge: q\nper_replica: 1"),
        &format!("{s}.port"),
        12,
        "must be a port from 1 to 65535, not `70000`",
    );
    error_at(
        &block("port: 9100\npath: metrics\ngauge: q\nper_replica: 1"),
        &format!("{s}.path"),
        13,
        "must start with `/`, e.g. /metrics, not `metrics`",
    );
    error_at(
        &block("port: 9100\nper_replica: 1"),
        s,
        12,
        "needs gauge: NAME",
    );
    error_at(
        &block("port: 9100\ngauge: q\nhistogram: h\nper_replica: 1"),
        s,
        14,
        "has both gauge and histogram",
    );
    error_at(
        &block("port: 9100\ngauge: q"),
        s,
        12,
        "missing required key `per_replica`: add per_replica: N",
    );
    error_at(
        &block("port: 9100\ngauge: q\nper_replica: 0"),
        &format!("{s}.per_replica"),
        14,
        "must be a number above 0, e.g. 15, not `0`",
    );
    error_at(
        &block("port: 9100\ngauge: q\nper_replica: lots"),
        &format!("{s}.per_replica"),
        14,
        "must be a number above 0",
    );
    error_at(
        &block("port: 9100\ngauge: 9q\nper_replica: 1"),
        &format!("{s}.gauge"),
        13,
        "`9q` is not a Prometheus metric name",
    );
    for extra in ["quantile: 0.9", "above: 1s", "window: 1m"] {
        let key = extra.split(':').next().unwrap_or_default();
        error_at(
            &block(&format!("port: 9100\ngauge: q\nper_replica: 1\n{extra}")),
            &format!("{s}.{key}"),
            15,
            "belongs to a histogram, not a gauge: remove it, or use histogram: NAME",
        );
    }
    let h = |rest: &str| block(&format!("port: 9100\nhistogram: h\n{rest}"));
    // The histogram's own keys start at line 14.
    error_at(
        &h("quantile: 0.9\nabove: 1s\nper_replica: 1"),
        &format!("{s}.per_replica"),
        16,
        "belongs to a gauge, not a histogram",
    );
    error_at(
        &h("above: 1s"),
        s,
        12,
        "missing required key `quantile`: add quantile: Q between 0 and 1",
    );
    error_at(
        &h("quantile: 1\nabove: 1s"),
        &format!("{s}.quantile"),
        14,
        "must be between 0 and 1 (exclusive), e.g. 0.95 for p95, not `1`",
    );
    error_at(
        &h("quantile: 0\nabove: 1s"),
        &format!("{s}.quantile"),
        14,
        "must be between 0 and 1 (exclusive)",
    );
    error_at(
        &h("quantile: 95\nabove: 1s"),
        &format!("{s}.quantile"),
        14,
        "not `95`: write 0.95 for p95",
    );
    error_at(
        &h("quantile: 0.9"),
        s,
        12,
        "missing required key `above`: add above: THRESHOLD",
    );
    error_at(
        &h("quantile: 0.9\nabove: soon"),
        &format!("{s}.above"),
        15,
        "must be a duration (e.g. 800ms, 1.5s: taken in seconds) or a number",
    );
    error_at(
        &h("quantile: 0.9\nabove: 0ms"),
        &format!("{s}.above"),
        15,
        "must be above 0",
    );
    error_at(
        &h("quantile: 0.9\nabove: 1s\nwindow: 5s"),
        &format!("{s}.window"),
        16,
        "must be at least 10s",
    );
    error_at(
        &h("quantile: 0.9\nabove: 1s\nwindow: 120"),
        &format!("{s}.window"),
        16,
        "invalid duration `120`: use a number with a unit",
    );
    error_at(
        &h("quantile: 0.9\nabove: 1s\nwindw: 2m"),
        &format!("{s}.windw"),
        16,
        "unknown scrape key `windw`",
    );
    error_at(
        &with_metric("scrape: 9100"),
        s,
        11,
        "must be a mapping, not an integer: use {port: N, gauge: NAME",
    );
}

#[test]
fn histogram_bucket_suffix_is_a_warning() {
    let l = ok(&with_metric(
        "scrape: {port: 9100, histogram: req_seconds_bucket, quantile: 0.9, above: 1s}",
    ));
    assert!(
        l.diagnostics.iter().any(|d| d.severity == Severity::Warning
            && d.line == Some(11)
            && d.message.contains("write histogram: req_seconds")),
        "{:?}",
        l.diagnostics
    );
}

#[test]
fn cpu_and_memory_errors() {
    let m = "services.web.x-shoal-autoscale.metrics[0]";
    error_at(
        &with_metric("cpu: 70"),
        &format!("{m}.cpu"),
        11,
        "write `70%`",
    );
    error_at(
        &with_metric("cpu: 0.7"),
        &format!("{m}.cpu"),
        11,
        "write `70%`",
    );
    error_at(
        &with_metric("memory: 80"),
        &format!("{m}.memory"),
        11,
        "write `80%`",
    );
    error_at(
        &with_metric("cpu: 0%"),
        &format!("{m}.cpu"),
        11,
        "must be above 0% and at most 1000%, not `0%`",
    );
    error_at(
        &with_metric("cpu: 1001%"),
        &format!("{m}.cpu"),
        11,
        "must be above 0% and at most 1000%",
    );
    error_at(
        &with_metric("cpu: lots%"),
        &format!("{m}.cpu"),
        11,
        "must be a percentage like `70%`, not `lots%`",
    );
    error_at(
        &with_metric("cpu: [70%]"),
        &format!("{m}.cpu"),
        11,
        "must be a percentage like `70%`, not a list",
    );

    let bare = |metric: &str| {
        format!(
            "services:\n  web:\n    image: busybox\n    x-shoal-autoscale:\n      min: 1\n      max: 3\n      metrics:\n        - {metric}\n"
        )
    };
    error_at(
        &bare("cpu: 70%"),
        &format!("{m}.cpu"),
        8,
        "add deploy.resources.limits.cpus (or deploy.resources.reservations.cpus)",
    );
    error_at(
        &bare("memory: 80%"),
        &format!("{m}.memory"),
        8,
        "add deploy.resources.limits.memory (or deploy.resources.reservations.memory)",
    );
    // A memory limit does not make a CPU target valid.
    let only_memory = "services:\n  web:\n    image: busybox\n    mem_limit: 1g\n    x-shoal-autoscale:\n      min: 1\n      max: 3\n      metrics:\n        - cpu: 70%\n";
    error_at(only_memory, &format!("{m}.cpu"), 9, "cpu is a percentage of the replicas' CPU limit or reservation, and the service has neither");
}

#[test]
fn prometheus_errors() {
    let p = "services.web.x-shoal-autoscale.metrics[0].prometheus";
    let block = |lines: &str| {
        with_metric(&format!(
            "prometheus:\n{}",
            lines
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        ))
    };
    let q = "query: sum(q)\nper_replica: 10";
    error_at(&block(&format!("url: ftp://prom:9090\n{q}")), &format!("{p}.url"), 12, "must be an http:// or https:// URL with a host, e.g. http://prometheus:9090, not `ftp://prom:9090`");
    error_at(
        &block(&format!("url: http://\n{q}")),
        &format!("{p}.url"),
        12,
        "must be an http:// or https:// URL with a host",
    );
    error_at(
        &block(&format!("url: http://:9090/\n{q}")),
        &format!("{p}.url"),
        12,
        "must be an http:// or https:// URL with a host",
    );
    error_at(
        &block(&format!("url: http://prom:port\n{q}")),
        &format!("{p}.url"),
        12,
        "must be an http:// or https:// URL with a host",
    );
    error_at(
        &block(&format!("url: prom:9090\n{q}")),
        &format!("{p}.url"),
        12,
        "must be an http:// or https:// URL",
    );
    error_at(
        &block("url: http://prom:9090\nquery: \" \"\nper_replica: 10"),
        &format!("{p}.query"),
        13,
        "must not be empty: write a PromQL query",
    );
    error_at(
        &block("url: http://prom:9090\nquery: sum(q)"),
        p,
        12,
        "missing required key `per_replica`: add per_replica: N",
    );
    error_at(
        &block("url: http://prom:9090\nper_replica: 10"),
        p,
        12,
        "missing required key `query`: add query: PROMQL",
    );
    error_at(
        &block(q),
        p,
        12,
        "missing required key `url`: add url: http://HOST:9090",
    );
    error_at(
        &block("url: http://prom:9090\nquery: sum(q)\nper_replica: -1"),
        &format!("{p}.per_replica"),
        14,
        "must be a number above 0",
    );
    error_at(&block(&format!("url: http://prom:9090\n{q}\ntimeout: 5s")), &format!("{p}.timeout"), 15, "unknown prometheus key `timeout`: use {url: http://HOST:9090, query: PROMQL, per_replica: N}");
    error_at(
        &with_metric("prometheus: http://prom:9090"),
        p,
        11,
        "must be a mapping, not a string",
    );
}

#[test]
fn behavior_errors() {
    let a = "services.web.x-shoal-autoscale";
    let body =
        |extra: &str| with_limits(&format!("min: 1\nmax: 3\nmetrics: [{{cpu: 50%}}]\n{extra}"));
    // `extra` starts at line 11.
    error_at(
        &body("scale_up:\n  stabilization: 30"),
        &format!("{a}.scale_up.stabilization"),
        12,
        "invalid duration `30`: use a number with a unit, e.g. 10s",
    );
    error_at(
        &body("scale_down:\n  max_step: 0"),
        &format!("{a}.scale_down.max_step"),
        12,
        "must be at least 1: leave max_step out for no limit",
    );
    error_at(
        &body("scale_down:\n  max_step: -2"),
        &format!("{a}.scale_down.max_step"),
        12,
        "must be a whole number of replicas",
    );
    error_at(
        &body("scale_down:\n  cooldown: 5m"),
        &format!("{a}.scale_down.cooldown"),
        12,
        "unknown scale_down key `cooldown`: use {stabilization: DURATION, max_step: N}",
    );
    error_at(
        &body("scale_up: fast"),
        &format!("{a}.scale_up"),
        11,
        "must be a mapping, not a string: use {stabilization: DURATION, max_step: N}",
    );
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let (_, diags) = errors(&with_limits(
        "min: 0\nmax: 3\nmetrics:\n  - cpu: 70\n  - scrape: {port: 0, gauge: q, per_replica: 1}\nscale_up: {max_step: 0}\n",
    ));
    let keys: Vec<&str> = diags.iter().map(|d| d.key.as_str()).collect();
    for want in [
        "services.web.x-shoal-autoscale.min",
        "services.web.x-shoal-autoscale.metrics[0].cpu",
        "services.web.x-shoal-autoscale.metrics[1].scrape.port",
        "services.web.x-shoal-autoscale.scale_up.max_step",
    ] {
        assert!(keys.contains(&want), "{want} missing from {keys:?}");
    }
}

#[test]
fn missing_keys_of_one_mapping_are_named_together() {
    // The loader keeps one error per place, so what is wrong with a mapping as a whole
    // is said in one message.
    let (_, diags) = errors(&with_metric("scrape: {gauge: q}"));
    let d = diags
        .iter()
        .find(|d| d.key == "services.web.x-shoal-autoscale.metrics[0].scrape")
        .unwrap_or_else(|| panic!("{diags:?}"));
    assert_eq!(d.line, Some(11));
    assert!(
        d.message.contains("missing required key `port`")
            && d.message.contains("missing required key `per_replica`"),
        "{}",
        d.message
    );

    let (_, diags) = errors(
        "services:\n  web:\n    image: busybox\n    deploy: {mode: global}\n    x-shoal-autoscale:\n      metrics: [{scrape: {port: 9100, gauge: q, per_replica: 1}}]\n",
    );
    let d = diags
        .iter()
        .find(|d| d.key == "services.web.x-shoal-autoscale")
        .unwrap_or_else(|| panic!("{diags:?}"));
    assert_eq!(d.line, Some(5));
    for want in [
        "only replicated services autoscale",
        "missing required key `min`",
        "missing required key `max`",
    ] {
        assert!(d.message.contains(want), "{want}: {}", d.message);
    }
}
