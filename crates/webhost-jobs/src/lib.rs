//! Durable background jobs in a database's `jobs` table — the control
//! plane's (provisioning, retention, health checks) and each cell's (webhook
//! deliveries) — on SQLite and PostgreSQL alike (the queue itself is
//! `webhost_storage::JobStore`).
//!
//! - A [`Handler`] runs one kind of job. **Handlers must be idempotent**: a
//!   job runs at least once, not exactly once. A worker killed mid-job, a
//!   crash between the handler's return and the commit of `succeeded`, or a
//!   lease lost to a stalled worker all run it again.
//! - [`Jobs`] holds the store and the handlers: `enqueue`, [`Jobs::run_once`]
//!   (claim and run what is due, to completion — what tests drive), and
//!   [`Jobs::spawn_workers`] (one loop per queue, bounded by the queue's
//!   concurrency, on the caller's `TaskTracker`).
//! - Failures: [`JobError::Retry`] comes back after [`Backoff`] (the retry
//!   time is stored in the job row, so a restart keeps the schedule) until
//!   the job's `max_attempts`; [`JobError::Permanent`] fails it at once.
//! - Leases: a running job holds a lease renewed by heartbeats; a job whose
//!   lease lapsed (its worker died) is queued again by `recover_expired`.
//! - Shutdown: stop claiming, let running jobs finish within a grace period,
//!   give back (`release`, no attempt counted) what is still running.
//! - [`CronSchedule`]s enqueue jobs at fixed UTC times, once per slot across
//!   all nodes (`JobStore::schedule_due`).
//!
//! Time comes from a [`Clock`], so tests move it by hand instead of sleeping.

mod backoff;
mod clock;
mod cron;
mod handler;
mod runner;

pub use backoff::Backoff;
pub use clock::{Clock, ManualClock, SystemClock};
pub use cron::CronSchedule;
pub use handler::{Handler, JobContext, JobError};
pub use runner::{queues, Jobs, QueueConfig, DEFAULT_LEASE};
