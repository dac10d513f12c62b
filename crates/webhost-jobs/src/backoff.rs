use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// When a job that failed with a retryable error runs again: `base ×
/// factor^(attempts − 1)`, capped at `max`, plus up to `jitter` (a fraction)
/// of that on top, so jobs that failed together do not all come back in the
/// same instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub factor: f64,
    pub max: Duration,
    /// 0.1: up to 10 % later than the exponential delay.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 10 s, 20 s, 40 s, … up to an hour, +≤10 %.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            factor: 2.0,
            max: Duration::from_secs(3600),
            jitter: 0.1,
        }
    }
}

impl Backoff {
    /// The same curve with every delay multiplied by `scale` (a test or a
    /// demo runs a day's retries in seconds; production keeps 1).
    pub fn scaled(self, scale: f64) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        let times = |d: Duration| Duration::try_from_secs_f64(d.as_secs_f64() * scale).unwrap_or(d);
        Self {
            base: times(self.base),
            max: times(self.max),
            ..self
        }
    }

    /// The delay after `attempts` attempts (1: the first one failed) with
    /// `unit` ∈ [0, 1] as the jitter draw. Pure.
    pub fn delay(&self, attempts: u32, unit: f64) -> Duration {
        // Past 2^63 every factor worth using has long hit the cap.
        let exponent = attempts.saturating_sub(1).min(63) as i32;
        let max = self.max.as_secs_f64();
        let exponential = self.base.as_secs_f64() * self.factor.powi(exponent);
        let capped = if exponential.is_finite() {
            exponential.clamp(0.0, max)
        } else {
            max
        };
        let jitter = self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0);
        Duration::try_from_secs_f64(capped * (1.0 + jitter)).unwrap_or(self.max)
    }

    /// When to run again after `attempts` attempts, from `now`.
    pub fn next_retry(&self, attempts: u32, now: DateTime<Utc>) -> DateTime<Utc> {
        self.next_retry_with(attempts, now, rand::random::<f64>())
    }

    /// [`Backoff::next_retry`] with the jitter draw given. Pure.
    pub fn next_retry_with(&self, attempts: u32, now: DateTime<Utc>, unit: f64) -> DateTime<Utc> {
        let delay = TimeDelta::from_std(self.delay(attempts, unit)).unwrap_or(TimeDelta::MAX);
        now.checked_add_signed(delay)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let backoff = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        let secs: Vec<u64> = (1..=12).map(|n| backoff.delay(n, 0.5).as_secs()).collect();
        assert_eq!(
            secs,
            vec![10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600, 3600]
        );
        assert_eq!(backoff.delay(0, 0.0).as_secs(), 10, "0 reads as the first");
        assert_eq!(backoff.delay(u32::MAX, 0.0).as_secs(), 3600);
    }

    #[test]
    fn jitter_adds_at_most_its_fraction() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(1, 0.0), Duration::from_secs(10));
        assert_eq!(backoff.delay(1, 1.0), Duration::from_secs(11));
        assert_eq!(
            backoff.delay(1, 7.0),
            Duration::from_secs(11),
            "draw clamped"
        );
        assert_eq!(backoff.delay(20, 1.0), Duration::from_secs(3960));
    }

    #[test]
    fn next_retry_grows_with_every_attempt_whatever_the_draw() {
        let backoff = Backoff::default();
        for _ in 0..100 {
            let mut previous = now();
            for attempts in 1..=9 {
                let at = backoff.next_retry(attempts, now());
                assert!(at > previous, "attempt {attempts}: {at} after {previous}");
                previous = at;
            }
        }
        assert_eq!(
            backoff.next_retry_with(3, now(), 0.0),
            now() + TimeDelta::seconds(40)
        );
    }

    #[test]
    fn odd_settings_never_panic() {
        let zero = Backoff {
            base: Duration::ZERO,
            ..Backoff::default()
        };
        assert_eq!(zero.delay(40, 1.0), Duration::ZERO);
        let huge = Backoff {
            factor: 1e300,
            ..Backoff::default()
        };
        assert_eq!(huge.delay(50, 0.0), Duration::from_secs(3600));
        let far = Backoff {
            base: Duration::MAX,
            max: Duration::MAX,
            ..Backoff::default()
        };
        assert_eq!(far.next_retry_with(3, now(), 1.0), DateTime::<Utc>::MAX_UTC);
    }
}
