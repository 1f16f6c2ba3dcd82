//! `histogram_quantile` over classic (`le`) buckets, computed as Prometheus computes it,
//! so a `scrape: {histogram, quantile}` metric reads what
//! `histogram_quantile(q, sum by (le) (rate(NAME_bucket[window])))` would.
//!
//! This follows `bucketQuantile` in Prometheus' `promql/quantile.go`:
//! - `q` NaN gives NaN (here `None`), `q < 0` gives -Inf, `q > 1` gives +Inf;
//! - buckets are sorted by upper bound; if the highest is not `+Inf` the result is NaN;
//! - buckets with the same upper bound are merged (`coalesceBuckets`);
//! - `ensureMonotonicAndIgnoreSmallDeltas`: a count that differs from the last accepted
//!   one by a relative 1e-12 or less (`almost.Equal`) is set to it, in either direction;
//!   a count lower than the last accepted one is raised to it (the "envelope"); neither
//!   correction moves the last accepted count;
//! - fewer than 2 buckets, or no observations (the `+Inf` count is 0): NaN;
//! - `rank = q * observations`; the bucket is the first (of all but `+Inf`) whose count
//!   is `>= rank` (`sort.Search`); in the `+Inf` bucket the result is the upper bound of
//!   the bucket before it; in the lowest bucket with an upper bound `<= 0` the result is
//!   that bound; otherwise linear interpolation within the bucket, from 0 for the lowest
//!   bucket: `start + (end - start) * (rank - count_below) / (count - count_below)`.

/// `smallDeltaTolerance` in `promql/quantile.go`.
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// The `q`-quantile of cumulative `(le, count)` buckets (in any order), or `None` where
/// Prometheus answers NaN: no observations, no `+Inf` bucket, fewer than two buckets,
/// `q` NaN.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if q.is_nan() {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    let mut b: Vec<(f64, f64)> = buckets.to_vec();
    // Prometheus does not expect NaN bounds either; `total_cmp` keeps the sort total.
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    match b.last() {
        Some((le, _)) if *le == f64::INFINITY => {}
        _ => return None,
    }
    let mut b = coalesce(b);
    ensure_monotonic_and_ignore_small_deltas(&mut b, SMALL_DELTA_TOLERANCE);
    if b.len() < 2 {
        return None;
    }
    let observations = b[b.len() - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return None;
    }
    let mut rank = q * observations;
    // `sort.Search(len(buckets)-1, count >= rank)`: the counts are monotonic now.
    let i = b[..b.len() - 1].partition_point(|(_, count)| *count < rank);
    if i == b.len() - 1 {
        return Some(b[b.len() - 2].0);
    }
    if i == 0 && b[0].0 <= 0.0 {
        return Some(b[0].0);
    }
    let (end, mut count) = b[i];
    let mut start = 0.0;
    if i > 0 {
        start = b[i - 1].0;
        count -= b[i - 1].1;
        rank -= b[i - 1].1;
    }
    Some(start + (end - start) * (rank / count))
}

/// `coalesceBuckets`: sorted buckets with the same upper bound merged, counts summed.
fn coalesce(sorted: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(sorted.len());
    for (le, count) in sorted {
        match out.last_mut() {
            Some(last) if last.0 == le => last.1 += count,
            _ => out.push((le, count)),
        }
    }
    out
}

/// `ensureMonotonicAndIgnoreSmallDeltas`.
fn ensure_monotonic_and_ignore_small_deltas(b: &mut [(f64, f64)], tolerance: f64) {
    let Some(first) = b.first() else {
        return;
    };
    let mut prev = first.1;
    for bucket in b.iter_mut().skip(1) {
        let curr = bucket.1;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, tolerance) || curr < prev {
            bucket.1 = prev;
            continue;
        }
        prev = curr;
    }
}

/// `util/almost.Equal`.
fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE; // 0x0010000000000000
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

#[cfg(test)]
mod tests {
    use super::histogram_quantile as hq;

    const INF: f64 = f64::INFINITY;

    /// 100 observations: 10 up to 0.1, 20 more up to 0.25, 40 more up to 0.5, 20 more up
    /// to 1, 10 above.
    const LATENCY: [(f64, f64); 5] = [
        (0.1, 10.0),
        (0.25, 30.0),
        (0.5, 70.0),
        (1.0, 90.0),
        (INF, 100.0),
    ];

    #[test]
    fn interpolates_within_the_bucket_of_the_rank() {
        // rank 50 falls in (0.25, 0.5]: 0.25 + 0.25 * (50 - 30) / (70 - 30).
        assert_eq!(hq(0.5, &LATENCY), Some(0.375));
        // rank 90 is the count of the 1.0 bucket: its upper bound.
        assert_eq!(hq(0.9, &LATENCY), Some(1.0));
        // rank 80: 0.5 + 0.5 * (80 - 70) / (90 - 70).
        assert_eq!(hq(0.8, &LATENCY), Some(0.75));
    }

    #[test]
    fn the_lowest_bucket_interpolates_from_zero() {
        // rank 5 in (0, 0.1]: 0.1 * 5 / 10.
        assert_eq!(hq(0.05, &LATENCY), Some(0.05));
        assert_eq!(hq(0.0, &LATENCY), Some(0.0));
    }

    #[test]
    fn the_inf_bucket_answers_the_bound_below_it() {
        // rank 95 is above every finite bucket's count.
        assert_eq!(hq(0.95, &LATENCY), Some(1.0));
        assert_eq!(hq(1.0, &LATENCY), Some(1.0));
    }

    #[test]
    fn a_lowest_bucket_at_or_below_zero_answers_its_bound() {
        let b = [(-1.0, 5.0), (0.0, 10.0), (INF, 10.0)];
        assert_eq!(hq(0.25, &b), Some(-1.0));
        // rank 7.5 in (-1, 0]: -1 + 1 * (7.5 - 5) / 5.
        assert_eq!(hq(0.75, &b), Some(-0.5));
    }

    #[test]
    fn order_does_not_matter_and_equal_bounds_merge() {
        let mut shuffled = LATENCY;
        shuffled.reverse();
        assert_eq!(hq(0.5, &shuffled), Some(0.375));
        // Two nodes' 0.5 buckets: 20 observations at or below 0.5, rank 10 in (0, 0.5].
        let b = [(0.5, 10.0), (INF, 10.0), (0.5, 10.0), (INF, 10.0)];
        assert_eq!(hq(0.5, &b), Some(0.25));
    }

    #[test]
    fn decreasing_counts_are_raised_to_the_envelope() {
        // The 0.2 bucket's 5 becomes 10; rank 20 in (0.2, 0.4]: 0.2 + 0.2 * 10 / 20
        // (without the fix it would be 0.2 + 0.2 * 15 / 25 = 0.32).
        let b = [(0.1, 10.0), (0.2, 5.0), (0.4, 30.0), (INF, 40.0)];
        let got = hq(0.5, &b).unwrap();
        assert!((got - 0.3).abs() < 1e-12, "{got}");
    }

    #[test]
    fn numerically_insignificant_deltas_are_ignored() {
        // 10 + 1e-14 is 10 within 1e-12: every count is 10, so rank 10 is the first
        // bucket's count and the answer its bound (without it, the second bucket: 2).
        let b = [(1.0, 10.0), (2.0, 10.0 + 1e-14), (INF, 10.0 + 1e-14)];
        assert_eq!(hq(1.0, &b), Some(1.0));
    }

    #[test]
    fn nan_where_prometheus_answers_nan() {
        assert_eq!(hq(0.5, &[]), None);
        assert_eq!(hq(0.5, &[(0.1, 0.0), (INF, 0.0)]), None, "no observations");
        assert_eq!(hq(0.5, &[(0.1, 1.0), (1.0, 2.0)]), None, "no +Inf bucket");
        assert_eq!(hq(0.5, &[(INF, 3.0)]), None, "one bucket");
        assert_eq!(hq(f64::NAN, &LATENCY), None);
        assert_eq!(hq(-0.1, &LATENCY), Some(f64::NEG_INFINITY));
        assert_eq!(hq(1.1, &LATENCY), Some(f64::INFINITY));
    }
}
