//! How much a replica's histogram grew over a window (pure): the samples of its
//! cumulative `le` bucket counters read over the last `window`, and their growth from
//! the oldest to the newest, a counter that went down counting from zero (a restart of
//! the process that serves it), as Prometheus's `rate` does.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Cumulative bucket counters by upper bound (`le`), ascending, each bound once
/// (`+Inf` is `f64::INFINITY`, last).
pub type Buckets = Vec<(f64, f64)>;

/// `(le, count)` pairs as [`Buckets`]: sorted by bound, the counts of equal bounds
/// added (series that differ in other labels).
pub fn merge(pairs: impl IntoIterator<Item = (f64, f64)>) -> Buckets {
    let mut all: Vec<(f64, f64)> = pairs.into_iter().filter(|(le, _)| !le.is_nan()).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Buckets = Vec::with_capacity(all.len());
    for (le, count) in all {
        match out.last_mut() {
            Some((last, sum)) if *last == le => *sum += count,
            _ => out.push((le, count)),
        }
    }
    out
}

/// The growth of a histogram over the time its samples cover.
#[derive(Debug, Clone, PartialEq)]
pub struct Growth {
    pub buckets: Buckets,
    /// From the oldest sample kept to the newest.
    pub covered: Duration,
}

/// One replica's samples of one histogram.
#[derive(Debug, Clone, Default)]
pub struct Window {
    samples: VecDeque<(Instant, Buckets)>,
}

impl Window {
    /// Add the counters read at `now` and forget the samples older than `span` before
    /// it. The one before `now` is always kept: a window shorter than the interval
    /// between reads covers that interval.
    pub fn push(&mut self, now: Instant, buckets: Buckets, span: Duration) {
        self.samples.push_back((now, buckets));
        while self.samples.len() > 2 {
            match self.samples.front() {
                Some((at, _)) if now.saturating_duration_since(*at) > span => {
                    self.samples.pop_front();
                }
                _ => break,
            }
        }
    }

    /// How much each bucket of the newest sample grew since the oldest kept, added up
    /// between consecutive samples (a count lower than the one before is a reset: it
    /// grew by all of it). A bound missing from the sample before adds nothing for
    /// that step. `None` until there are two samples.
    pub fn growth(&self) -> Option<Growth> {
        let (first, _) = self.samples.front()?;
        let (last, newest) = self.samples.back()?;
        if self.samples.len() < 2 {
            return None;
        }
        let mut grown: Buckets = newest.iter().map(|(le, _)| (*le, 0.0)).collect();
        let steps = self.samples.iter().zip(self.samples.iter().skip(1));
        for ((_, before), (_, after)) in steps {
            for (le, sum) in grown.iter_mut() {
                let (Some(b), Some(a)) = (count_at(before, *le), count_at(after, *le)) else {
                    continue;
                };
                *sum += if a >= b { a - b } else { a };
            }
        }
        Some(Growth {
            buckets: grown,
            covered: last.saturating_duration_since(*first),
        })
    }
}

fn count_at(buckets: &Buckets, le: f64) -> Option<f64> {
    buckets.iter().find(|(l, _)| *l == le).map(|(_, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn merging_sorts_by_bound_and_adds_equal_bounds() {
        assert_eq!(
            merge([(INF, 10.0), (0.5, 3.0), (0.1, 1.0), (0.5, 4.0), (INF, 2.0)]),
            vec![(0.1, 1.0), (0.5, 7.0), (INF, 12.0)]
        );
        assert_eq!(merge([(f64::NAN, 1.0)]), vec![]);
    }

    #[test]
    fn growth_is_from_the_oldest_sample_in_the_window_to_now() {
        let t0 = Instant::now();
        let span = secs(10);
        let mut w = Window::default();
        w.push(t0, vec![(0.5, 10.0), (INF, 20.0)], span);
        assert_eq!(w.growth(), None, "one sample has no growth");
        w.push(t0 + secs(5), vec![(0.5, 13.0), (INF, 25.0)], span);
        assert_eq!(
            w.growth(),
            Some(Growth {
                buckets: vec![(0.5, 3.0), (INF, 5.0)],
                covered: secs(5),
            })
        );
        w.push(t0 + secs(10), vec![(0.5, 14.0), (INF, 30.0)], span);
        assert_eq!(
            w.growth(),
            Some(Growth {
                buckets: vec![(0.5, 4.0), (INF, 10.0)],
                covered: secs(10),
            })
        );
        // t0 falls out of the window: growth from t0 + 5 s.
        w.push(t0 + secs(15), vec![(0.5, 20.0), (INF, 40.0)], span);
        assert_eq!(
            w.growth(),
            Some(Growth {
                buckets: vec![(0.5, 7.0), (INF, 15.0)],
                covered: secs(10),
            })
        );
    }

    #[test]
    fn a_counter_that_went_down_was_reset_and_counts_from_zero() {
        let t0 = Instant::now();
        let span = secs(60);
        let mut w = Window::default();
        w.push(t0, vec![(1.0, 100.0), (INF, 200.0)], span);
        w.push(t0 + secs(5), vec![(1.0, 110.0), (INF, 220.0)], span);
        // The process restarted: its counters start again.
        w.push(t0 + secs(10), vec![(1.0, 4.0), (INF, 6.0)], span);
        w.push(t0 + secs(15), vec![(1.0, 9.0), (INF, 16.0)], span);
        assert_eq!(
            w.growth(),
            Some(Growth {
                buckets: vec![(1.0, 10.0 + 4.0 + 5.0), (INF, 20.0 + 6.0 + 10.0)],
                covered: secs(15),
            })
        );
    }

    #[test]
    fn a_window_shorter_than_asked_says_what_it_covers() {
        let t0 = Instant::now();
        let mut w = Window::default();
        w.push(t0, vec![(INF, 1.0)], secs(120));
        w.push(t0 + secs(5), vec![(INF, 4.0)], secs(120));
        let g = w.growth().expect("two samples");
        assert_eq!(g.covered, secs(5));
        assert_eq!(g.buckets, vec![(INF, 3.0)]);
    }

    #[test]
    fn a_window_shorter_than_the_interval_covers_the_last_interval() {
        let t0 = Instant::now();
        let mut w = Window::default();
        w.push(t0, vec![(INF, 1.0)], secs(2));
        w.push(t0 + secs(5), vec![(INF, 4.0)], secs(2));
        w.push(t0 + secs(10), vec![(INF, 10.0)], secs(2));
        assert_eq!(
            w.growth(),
            Some(Growth {
                buckets: vec![(INF, 6.0)],
                covered: secs(5),
            })
        );
    }

    #[test]
    fn a_bound_new_in_the_layout_adds_nothing_until_it_was_seen_twice() {
        let t0 = Instant::now();
        let span = secs(60);
        let mut w = Window::default();
        w.push(t0, vec![(INF, 10.0)], span);
        w.push(t0 + secs(5), vec![(0.2, 3.0), (INF, 15.0)], span);
        w.push(t0 + secs(10), vec![(0.2, 5.0), (INF, 18.0)], span);
        assert_eq!(
            w.growth().map(|g| g.buckets),
            Some(vec![(0.2, 2.0), (INF, 8.0)])
        );
    }
}
