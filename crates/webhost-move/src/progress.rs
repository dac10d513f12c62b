//! What `GET /api/admin/migrations/{id}` shows of a move.

use serde::Serialize;

use crate::model::{Move, Outcome, Phase, RollbackStep, StepTiming};

/// A move's progress for the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MoveProgress {
    /// The state's snake_case name (`copying`, `grace_period`, …).
    pub state: &'static str,
    /// The step of SPEC §6 it is at (1–7; an abort keeps the step it
    /// happened at).
    pub step: u8,
    pub of: u8,
    /// 0–100; a finished move is at 100 however it ended.
    pub percent: u8,
    pub rows_copied: u64,
    pub catch_up_rounds: u32,
    /// How long the tenant's writes were held, once released.
    pub freeze_ms: Option<u64>,
    pub timings: Vec<StepTiming>,
    pub outcome: Option<Outcome>,
    pub last_error: Option<String>,
    pub attention: Option<String>,
}

impl Move {
    pub fn progress(&self) -> MoveProgress {
        MoveProgress {
            state: self.phase.name(),
            step: self.phase.spec_step(),
            of: 7,
            percent: self.percent(),
            rows_copied: self.rows_copied.values().sum(),
            catch_up_rounds: self.catch_up_rounds,
            freeze_ms: self.freeze.as_ref().and_then(|f| f.held_ms()),
            timings: self.timings.clone(),
            outcome: self.outcome.clone(),
            last_error: self.last_error.clone(),
            attention: self.attention.clone(),
        }
    }

    /// Step-weighted: the snapshot copy is most of the work (5–60 %, by
    /// tables done, as row totals are not known ahead), catch-up rounds
    /// 60–70 %, the frozen steps and switch to 90 %, the grace period 95 %.
    fn percent(&self) -> u8 {
        match &self.phase {
            Phase::Preparing { .. } => 0,
            Phase::Copying { table, .. } => {
                let done = self.tables.iter().position(|t| t == table).unwrap_or(0);
                let total = self.tables.len().max(1);
                5 + u8::try_from(done * 55 / total).unwrap_or(55)
            }
            Phase::CatchingUp { round } => {
                let cap = self.policy.max_catch_up_rounds.max(1);
                60 + u8::try_from(round.min(&cap) * 10 / cap).unwrap_or(10)
            }
            Phase::Freezing => 72,
            Phase::FinalCatchUp => 76,
            Phase::Verifying => 80,
            Phase::Switching { .. } => 85,
            Phase::Unfreezing => 90,
            Phase::GracePeriod { .. } => 95,
            Phase::DeletingSource => 98,
            Phase::Aborting { .. } => 99,
            Phase::RollingBack { step } => match step {
                RollbackStep::CatchingUp { .. } => 10,
                RollbackStep::Freezing => 40,
                RollbackStep::FinalCatchUp => 50,
                RollbackStep::Verifying => 60,
                RollbackStep::SwitchingBack { .. } => 70,
                RollbackStep::Releasing { .. } => 80,
                RollbackStep::DeletingTarget => 90,
                RollbackStep::Abandoning { .. } => 99,
            },
            Phase::Done | Phase::Aborted { .. } | Phase::RolledBack => 100,
        }
    }
}
