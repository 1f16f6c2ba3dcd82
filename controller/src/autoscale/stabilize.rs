//! Stabilization windows, as the HPA's `stabilizeRecommendationWithBehaviors`: a service's
//! recommendations of the last window, and the count they allow.
//!
//! With `up` the least recommendation within `scale_up.stabilization` (now's included)
//! and `down` the most within `scale_down.stabilization` (now's included): the count
//! rises to `up` when below it, falls to `down` when above it, else stays. A window of
//! 0 holds only now's recommendation (at once). A recommendation counts while its age is
//! below the window (the HPA's `timestamp.After(now - window)`).
//!
//! A leader does not scale down before it has watched a whole scale-down window (it
//! holds no recommendations from before it led: the HPA seeds a new controller's window
//! with the current count for the same reason): while `now` is within the window of the
//! later of `watching_since_ms` (when this controller became leader) and the first
//! evaluation of the service, `down` is at least the current count.

use std::collections::VecDeque;

use shoal_proto::autoscale::Autoscale;

/// One service's recommendations, in the leader's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// When this leader first evaluated the service.
    since_ms: u64,
    /// `(time, recommendation)`, oldest first; none older than the longer window.
    recs: VecDeque<(u64, u64)>,
}

/// What the windows allow now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stabilized {
    /// The count the windows allow.
    pub count: u64,
    /// The least recommendation within the scale-up window.
    pub up: u64,
    /// The most recommendation within the scale-down window.
    pub down: u64,
    /// Set when the scale-down window has not been watched whole yet and so kept the
    /// count from going down: how long it has been watched.
    pub watched_ms: Option<u64>,
}

impl History {
    pub fn new(now_ms: u64) -> History {
        History {
            since_ms: now_ms,
            recs: VecDeque::new(),
        }
    }

    /// The count the windows allow for `recommendation` at `now_ms`, a service running
    /// `current`; then remembers the recommendation.
    pub fn stabilize(
        &mut self,
        spec: &Autoscale,
        current: u64,
        recommendation: u64,
        now_ms: u64,
        watching_since_ms: u64,
    ) -> Stabilized {
        let up_ms = spec.scale_up.stabilization_ms;
        let down_ms = spec.scale_down.stabilization_ms;
        let within = |t: u64, window: u64| now_ms.saturating_sub(t) < window;
        let up = self
            .recs
            .iter()
            .filter(|(t, _)| within(*t, up_ms))
            .map(|(_, r)| *r)
            .fold(recommendation, u64::min);
        let down = self
            .recs
            .iter()
            .filter(|(t, _)| within(*t, down_ms))
            .map(|(_, r)| *r)
            .fold(recommendation, u64::max);
        let watched = now_ms.saturating_sub(self.since_ms.max(watching_since_ms));
        let watched_ms = (watched < down_ms && down < current).then_some(watched);
        let mut count = current;
        if count < up {
            count = up;
        }
        if count > down && watched_ms.is_none() {
            count = down;
        }
        self.recs.push_back((now_ms, recommendation));
        let keep = up_ms.max(down_ms);
        while self.recs.front().is_some_and(|(t, _)| !within(*t, keep)) {
            self.recs.pop_front();
        }
        Stabilized {
            count,
            up,
            down,
            watched_ms,
        }
    }

    /// The remembered `(time, recommendation)`, oldest first.
    pub fn recommendations(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.recs.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::autoscale::Behavior;

    fn spec(up_ms: u64, down_ms: u64) -> Autoscale {
        Autoscale {
            min: 1,
            max: 100,
            metrics: vec![],
            scale_up: Behavior {
                stabilization_ms: up_ms,
                max_step: None,
            },
            scale_down: Behavior {
                stabilization_ms: down_ms,
                max_step: None,
            },
        }
    }

    #[test]
    fn down_takes_the_most_of_the_window_up_the_least() {
        let s = spec(60_000, 300_000);
        let mut h = History::new(0);
        // Watched long enough (became leader long before).
        let at = |h: &mut History, current, rec, t| h.stabilize(&s, current, rec, t, 0).count;
        assert_eq!(at(&mut h, 5, 5, 300_000), 5);
        assert_eq!(at(&mut h, 5, 3, 310_000), 5, "5 recommended 10s ago");
        assert_eq!(at(&mut h, 5, 2, 599_999), 5, "5 is 299.999s old");
        assert_eq!(at(&mut h, 5, 2, 600_000), 3, "5 left the window, 3 did not");
        assert_eq!(at(&mut h, 3, 8, 610_000), 3, "up: 2 within the last minute");
        assert_eq!(at(&mut h, 3, 8, 660_000), 8, "2 left the up window");
        let kept: Vec<_> = h.recommendations().collect();
        assert_eq!(
            kept,
            vec![(599_999, 2), (600_000, 2), (610_000, 8), (660_000, 8)]
        );
    }

    #[test]
    fn zero_windows_follow_at_once() {
        let s = spec(0, 0);
        let mut h = History::new(0);
        assert_eq!(h.stabilize(&s, 5, 9, 1_000, 0).count, 9);
        assert_eq!(h.stabilize(&s, 9, 2, 2_000, 0).count, 2);
        assert_eq!(h.recommendations().count(), 0);
    }

    #[test]
    fn a_window_not_watched_whole_does_not_scale_down() {
        let s = spec(0, 300_000);
        let mut h = History::new(0);
        let got = h.stabilize(&s, 5, 2, 1_000_000, 900_000);
        assert_eq!(
            got,
            Stabilized {
                count: 5,
                up: 2,
                down: 2,
                watched_ms: Some(100_000)
            }
        );
        assert_eq!(h.stabilize(&s, 5, 2, 1_199_999, 900_000).count, 5);
        assert_eq!(h.stabilize(&s, 5, 2, 1_200_000, 900_000).count, 2);
        // Up is never held by it.
        let mut h = History::new(0);
        assert_eq!(h.stabilize(&s, 5, 7, 1_000_000, 900_000).count, 7);
    }
}
