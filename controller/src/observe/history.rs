//! An hour of figures at one point per minute, in memory: what `shoal stats` and the
//! dashboard chart per service (CPU and memory summed over replicas) and per GPU
//! (utilization and memory used). Pure: time is an argument.
//!
//! Each minute's point is the average of the samples added during that minute; the
//! minute under way is shown as the average so far. A series holds at most
//! [`MAX_POINTS`] finished minutes, so memory is bounded by the number of series.

use std::collections::VecDeque;

pub const MINUTE_MS: u64 = 60_000;
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
/// Finished minutes kept (with the minute under way, at most one hour and a minute).
pub const MAX_POINTS: usize = 60;

/// One minute's figure: for services, CPU percent of one CPU and memory bytes summed
/// over replicas; for GPUs, utilization percent and memory used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The start of the minute (ms since the epoch).
    pub at_ms: u64,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}

/// The samples of the minute under way.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Open {
    minute: u64,
    cpu_sum: f64,
    memory_sum: u128,
    samples: u64,
}

impl Open {
    fn point(&self) -> Point {
        let n = self.samples.max(1);
        Point {
            at_ms: self.minute * MINUTE_MS,
            cpu_percent: self.cpu_sum / n as f64,
            memory_bytes: u64::try_from(self.memory_sum / u128::from(n)).unwrap_or(u64::MAX),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    done: VecDeque<Point>,
    open: Option<Open>,
}

impl Series {
    /// Adds a sample taken at `now_ms`. A sample from an earlier minute than the one
    /// under way (the clock stepped back) counts in the minute under way.
    pub fn add(&mut self, now_ms: u64, cpu_percent: f64, memory_bytes: u64) {
        let minute = now_ms / MINUTE_MS;
        match &mut self.open {
            Some(o) if o.minute >= minute => {
                o.cpu_sum += cpu_percent;
                o.memory_sum += u128::from(memory_bytes);
                o.samples += 1;
                return;
            }
            Some(o) => {
                let finished = o.point();
                self.done.push_back(finished);
            }
            None => {}
        }
        self.open = Some(Open {
            minute,
            cpu_sum: cpu_percent,
            memory_sum: u128::from(memory_bytes),
            samples: 1,
        });
        self.trim(now_ms);
    }

    /// The points of minutes that started within the hour before `now_ms`, oldest first,
    /// the minute under way last.
    pub fn points(&self, now_ms: u64) -> Vec<Point> {
        let since = now_ms.saturating_sub(HOUR_MS);
        self.done
            .iter()
            .copied()
            .chain(self.open.map(|o| o.point()))
            .filter(|p| p.at_ms > since)
            .collect()
    }

    /// Forgets points older than an hour before `now_ms`, and any beyond
    /// [`MAX_POINTS`]. Returns whether anything of the last hour is left.
    pub fn trim(&mut self, now_ms: u64) -> bool {
        let since = now_ms.saturating_sub(HOUR_MS);
        while self
            .done
            .front()
            .is_some_and(|p| p.at_ms <= since || self.done.len() > MAX_POINTS)
        {
            self.done.pop_front();
        }
        if self.open.is_some_and(|o| o.minute * MINUTE_MS <= since) {
            self.open = None;
        }
        !self.done.is_empty() || self.open.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000 / MINUTE_MS * MINUTE_MS;

    #[test]
    fn a_minute_is_the_average_of_its_samples() {
        let mut s = Series::default();
        s.add(T0 + 1_000, 10.0, 100);
        s.add(T0 + 30_000, 30.0, 300);
        assert_eq!(
            s.points(T0 + 31_000),
            vec![Point {
                at_ms: T0,
                cpu_percent: 20.0,
                memory_bytes: 200
            }]
        );
        s.add(T0 + MINUTE_MS + 5, 50.0, 7);
        assert_eq!(
            s.points(T0 + MINUTE_MS + 10),
            vec![
                Point {
                    at_ms: T0,
                    cpu_percent: 20.0,
                    memory_bytes: 200
                },
                Point {
                    at_ms: T0 + MINUTE_MS,
                    cpu_percent: 50.0,
                    memory_bytes: 7
                }
            ]
        );
    }

    #[test]
    fn only_the_last_hour_is_kept() {
        let mut s = Series::default();
        for m in 0..150 {
            s.add(T0 + m * MINUTE_MS, m as f64, m);
        }
        let now = T0 + 149 * MINUTE_MS + 1;
        let points = s.points(now);
        assert_eq!(points.len(), 60);
        assert_eq!(points.first().unwrap().at_ms, T0 + 90 * MINUTE_MS);
        assert_eq!(points.last().unwrap().memory_bytes, 149);
        assert!(s.done.len() <= MAX_POINTS);
        // Nothing added for over an hour: the series is empty and says so.
        assert!(!s.trim(now + HOUR_MS + MINUTE_MS));
        assert!(s.points(now + HOUR_MS + MINUTE_MS).is_empty());
    }

    #[test]
    fn a_clock_step_back_counts_in_the_minute_under_way() {
        let mut s = Series::default();
        s.add(T0 + MINUTE_MS, 10.0, 10);
        s.add(T0, 20.0, 20);
        assert_eq!(s.points(T0 + MINUTE_MS).len(), 1);
        assert_eq!(s.points(T0 + MINUTE_MS)[0].cpu_percent, 15.0);
    }
}
