use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeDelta, Utc};

/// When a cron entry runs, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CronSchedule {
    /// Every day at `hour:minute` UTC (`hour` < 24, `minute` < 60).
    DailyAt { hour: u32, minute: u32 },
    /// Every period, aligned to the Unix epoch: `Every(6 h)` runs at 00:00,
    /// 06:00, 12:00 and 18:00 UTC whenever the process started. Whole
    /// seconds, at least one.
    Every(Duration),
}

impl CronSchedule {
    /// Why this schedule is unusable, if it is.
    pub fn check(&self) -> Result<(), String> {
        match *self {
            Self::DailyAt { hour, minute } if hour > 23 || minute > 59 => Err(format!(
                "DailyAt {{ hour: {hour}, minute: {minute} }} is not a time of day"
            )),
            Self::Every(period) if period.as_secs() == 0 => {
                Err(format!("Every({period:?}) is shorter than a second"))
            }
            _ => Ok(()),
        }
    }

    /// The first slot strictly after `now`. Pure. (Out-of-range values, which
    /// [`CronSchedule::check`] reports, are clamped.)
    pub fn next_after(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match *self {
            Self::DailyAt { hour, minute } => {
                let time = NaiveTime::from_hms_opt(hour.min(23), minute.min(59), 0)
                    .unwrap_or(NaiveTime::MIN);
                let today = now.date_naive().and_time(time).and_utc();
                if today > now {
                    today
                } else {
                    today + TimeDelta::days(1)
                }
            }
            Self::Every(period) => {
                let period = i64::try_from(period.as_secs().max(1)).unwrap_or(i64::MAX);
                let slot = now.timestamp().div_euclid(period).saturating_add(1);
                DateTime::from_timestamp(slot.saturating_mul(period), 0)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(d: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, d, h, m, s)
            .single()
            .expect("time")
    }

    #[test]
    fn daily_at_is_today_until_it_passes_then_tomorrow() {
        let nightly = CronSchedule::DailyAt { hour: 3, minute: 0 };
        assert_eq!(nightly.next_after(at(1, 0, 0, 0)), at(1, 3, 0, 0));
        assert_eq!(nightly.next_after(at(1, 2, 59, 59)), at(1, 3, 0, 0));
        assert_eq!(
            nightly.next_after(at(1, 3, 0, 0)),
            at(2, 3, 0, 0),
            "strictly after"
        );
        assert_eq!(nightly.next_after(at(1, 14, 37, 0)), at(2, 3, 0, 0));
        let late = CronSchedule::DailyAt {
            hour: 23,
            minute: 59,
        };
        assert_eq!(
            late.next_after(at(31, 23, 59, 30)).to_rfc3339(),
            "2030-02-01T23:59:00+00:00"
        );
    }

    #[test]
    fn every_is_aligned_to_the_epoch() {
        let six_hours = CronSchedule::Every(Duration::from_secs(6 * 3600));
        assert_eq!(six_hours.next_after(at(1, 0, 0, 0)), at(1, 6, 0, 0));
        assert_eq!(six_hours.next_after(at(1, 5, 59, 59)), at(1, 6, 0, 0));
        assert_eq!(six_hours.next_after(at(1, 6, 0, 0)), at(1, 12, 0, 0));
        assert_eq!(six_hours.next_after(at(1, 23, 0, 0)), at(2, 0, 0, 0));
        let quarter = CronSchedule::Every(Duration::from_secs(15 * 60));
        assert_eq!(quarter.next_after(at(1, 10, 7, 3)), at(1, 10, 15, 0));
        let with_nanos = at(1, 10, 15, 0) + TimeDelta::milliseconds(1);
        assert_eq!(quarter.next_after(with_nanos), at(1, 10, 30, 0));
    }

    #[test]
    fn bad_schedules_are_reported_and_do_not_panic() {
        let bad = CronSchedule::DailyAt {
            hour: 24,
            minute: 0,
        };
        assert!(bad.check().is_err());
        assert_eq!(bad.next_after(at(1, 0, 0, 0)), at(1, 23, 0, 0));
        let zero = CronSchedule::Every(Duration::from_millis(10));
        assert!(zero.check().is_err());
        assert_eq!(zero.next_after(at(1, 0, 0, 0)), at(1, 0, 0, 1));
        assert!(CronSchedule::Every(Duration::from_secs(60)).check().is_ok());
        assert!(CronSchedule::DailyAt {
            hour: 23,
            minute: 59
        }
        .check()
        .is_ok());
    }
}
