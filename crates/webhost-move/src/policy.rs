//! The knobs of a move. A move keeps the policy it started with (it is
//! persisted inside [`Move`](crate::Move)), so a configuration change or a
//! restart never changes the deadline of a freeze already running.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// How a move copies, catches up, freezes and waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MovePolicy {
    /// Rows per `CopyChunk` and changes per `CatchUp` call (bounded work
    /// per command, so one command never holds a cell for long).
    pub chunk_rows: u32,
    /// A catch-up round that applied at most this many changes (and had
    /// no more waiting) is small enough: the next step is the freeze.
    pub catch_up_threshold: u64,
    /// After this many catch-up rounds the move freezes anyway (a tenant
    /// writing faster than the copy keeps up must still move; the final
    /// catch-up then runs under the freeze and its deadline).
    pub max_catch_up_rounds: u32,
    /// The longest the tenant's writes may be held: from the `Freeze`
    /// command to the routing switch. Past it the move aborts.
    pub freeze_deadline_ms: u64,
    /// How long the source copy is kept read-only after the switch, for a
    /// rollback, before it is deleted.
    pub grace_period_secs: u64,
    /// How long to wait before asking again about a target cell that is
    /// still being provisioned.
    pub provision_poll_secs: u64,
    /// Tries of one command that failed with a retryable error before the
    /// failure counts as permanent.
    pub max_attempts: u32,
}

impl Default for MovePolicy {
    fn default() -> Self {
        Self {
            chunk_rows: 10_000,
            catch_up_threshold: 1_000,
            max_catch_up_rounds: 10,
            freeze_deadline_ms: 5_000,
            grace_period_secs: 7 * 24 * 3600,
            provision_poll_secs: 30,
            max_attempts: 5,
        }
    }
}

impl MovePolicy {
    pub(crate) fn freeze_deadline(&self, from: DateTime<Utc>) -> DateTime<Utc> {
        add_ms(from, self.freeze_deadline_ms)
    }

    pub(crate) fn grace_end(&self, from: DateTime<Utc>) -> DateTime<Utc> {
        add_ms(from, self.grace_period_secs.saturating_mul(1_000))
    }

    pub(crate) fn next_provision_poll(&self, from: DateTime<Utc>) -> DateTime<Utc> {
        add_ms(from, self.provision_poll_secs.saturating_mul(1_000))
    }
}

/// `from + ms`, saturating at the end of representable time instead of
/// panicking on a silly configuration.
fn add_ms(from: DateTime<Utc>, ms: u64) -> DateTime<Utc> {
    i64::try_from(ms)
        .ok()
        .and_then(TimeDelta::try_milliseconds)
        .and_then(|delta| from.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The history cutoff of a move between plans that keep `source_days` and
/// `target_days` of history: on a downgrade only what the target plan keeps
/// is copied (`now − target_days`); otherwise everything (`None`).
pub fn history_cutoff(
    now: DateTime<Utc>,
    source_days: u32,
    target_days: u32,
) -> Option<DateTime<Utc>> {
    if target_days >= source_days {
        return None;
    }
    TimeDelta::try_days(i64::from(target_days)).and_then(|keep| now.checked_sub_signed(keep))
}
