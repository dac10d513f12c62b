//! Test helpers: fixed times and ids, a move walked to any state with
//! hand-written events, and `World`: a fake of the cells, the edge and the
//! routing table that carries out commands the way the real ones must
//! (idempotently), with a tenant writing all the while.

#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use webhost_domain::{CellId, TenantId};
use webhost_move::{
    resume, step, Command, CommandKind, Event, Move, MoveError, MovePolicy, Phase, TableSum,
    VerifyReport,
};

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 6, 0, 0).unwrap()
}

pub fn at_ms(ms: i64) -> DateTime<Utc> {
    t0() + TimeDelta::milliseconds(ms)
}

pub fn tables() -> Vec<String> {
    vec!["vehicles".into(), "positions".into()]
}

pub struct Ids {
    pub tenant: TenantId,
    pub source: CellId,
    pub target: CellId,
}

pub fn ids() -> Ids {
    Ids {
        tenant: TenantId::new(),
        source: CellId::new(),
        target: CellId::new(),
    }
}

/// What a crash does to a move: persisted as JSON, read back.
pub fn reload(m: &Move) -> Move {
    let json = serde_json::to_string(m).expect("a move serializes");
    serde_json::from_str(&json).expect("a move deserializes")
}

/// `step`, expected to succeed; also checks that the commands returned are
/// what `resume` gives for the persisted state.
pub fn feed(m: &Move, event: Event, now: DateTime<Utc>) -> (Move, Vec<Command>) {
    let (next, commands) = step(m, event.clone(), now)
        .unwrap_or_else(|e| panic!("{} in {}: {e}", event.name(), m.phase.name()));
    assert_eq!(reload(&next), next, "the persisted move reads back exactly");
    assert_eq!(commands, resume(&reload(&next)), "step and resume agree");
    (next, commands)
}

pub fn try_feed(
    m: &Move,
    event: Event,
    now: DateTime<Utc>,
) -> Result<(Move, Vec<Command>), MoveError> {
    step(m, event, now)
}

pub fn report(rows: u64, sum: &str) -> VerifyReport {
    VerifyReport {
        tables: tables()
            .into_iter()
            .map(|t| {
                (
                    t,
                    TableSum {
                        rows,
                        checksum: sum.into(),
                    },
                )
            })
            .collect(),
        watermarks: tables().into_iter().map(|t| (t, 500)).collect(),
    }
}

pub fn marks(v: u64) -> BTreeMap<String, u64> {
    tables().into_iter().map(|t| (t, v)).collect()
}

pub fn failed(step: CommandKind, retryable: bool) -> Event {
    Event::StepFailed {
        step,
        error: "boom".into(),
        retryable,
    }
}

/// A move started at t0 with the default policy, target fixed.
pub fn started(ids: &Ids) -> Move {
    Move::start(
        ids.tenant,
        ids.source,
        Some(ids.target),
        tables(),
        None,
        MovePolicy::default(),
        t0(),
    )
    .unwrap()
    .0
}

/// The happy path's states in order, by name; `walk_to(name)` gives the
/// move in that state (events at 100 ms apart from t0).
pub const PATH: &[&str] = &[
    "preparing",
    "copying",
    "catching_up",
    "freezing",
    "final_catch_up",
    "verifying",
    "switching",
    "unfreezing",
    "grace_period",
    "deleting_source",
    "done",
];

pub fn walk_to(ids: &Ids, state: &str) -> Move {
    let mut m = started(ids);
    let mut ms = 0;
    let mut next = |m: &Move, e: Event| {
        ms += 100;
        feed(m, e, at_ms(ms)).0
    };
    let events = vec![
        Event::TargetReady { cell: ids.target },
        Event::ChunkCopied {
            table: "vehicles".into(),
            rows: 3,
            next_cursor: None,
            done: true,
            watermark: 10,
        },
        Event::ChunkCopied {
            table: "positions".into(),
            rows: 1_000,
            next_cursor: None,
            done: true,
            watermark: 12,
        },
        Event::CaughtUp {
            changes: 5,
            watermarks: marks(20),
            more: false,
        },
        Event::Frozen {
            at: at_ms(550),
            routing_version: 7,
        },
        Event::ReadOnly { cell: ids.source },
        Event::CaughtUp {
            changes: 1,
            watermarks: marks(21),
            more: false,
        },
        Event::Verified {
            source: report(1_000, "abc"),
            target: report(1_000, "abc"),
        },
        Event::Switched { version: 8 },
        Event::Unfrozen,
    ];
    for e in events {
        if m.phase.name() == state {
            return m;
        }
        m = next(&m, e);
    }
    if m.phase.name() == state {
        return m;
    }
    // Past the grace period.
    let Phase::GracePeriod { until } = m.phase else {
        panic!("expected grace period")
    };
    m = feed(&m, Event::Tick, until).0;
    if m.phase.name() == state {
        return m;
    }
    m = feed(&m, Event::CopyDeleted { cell: ids.source }, until).0;
    assert_eq!(m.phase.name(), state, "no such state on the happy path");
    m
}

// ---------------------------------------------------------------------------
// The fake world.

type Rows = BTreeMap<u64, String>;

#[derive(Clone, Debug, Default)]
pub struct CellData {
    pub present: bool,
    pub tables: BTreeMap<String, Rows>,
    /// (sequence, table, key, value or deletion)
    pub log: Vec<(u64, String, u64, Option<String>)>,
    pub seq: u64,
    pub read_only: bool,
}

impl CellData {
    fn apply(&mut self, table: &str, key: u64, value: Option<String>) {
        self.present = true;
        self.seq += 1;
        self.log.push((self.seq, table.into(), key, value.clone()));
        let rows = self.tables.entry(table.into()).or_default();
        match value {
            Some(v) => {
                rows.insert(key, v);
            }
            None => {
                rows.remove(&key);
            }
        }
    }

    fn sums(&self, tables: &[String]) -> VerifyReport {
        let mut report = VerifyReport::default();
        for t in tables {
            let rows = self.tables.get(t).cloned().unwrap_or_default();
            // Order-independent: XOR of per-row hashes.
            let sum = rows
                .iter()
                .map(|(k, v)| fnv(&format!("{k}\u{1f}{v}")))
                .fold(0u64, |a, h| a ^ h);
            report.tables.insert(
                t.clone(),
                TableSum {
                    rows: rows.len() as u64,
                    checksum: format!("{sum:016x}"),
                },
            );
            report.watermarks.insert(t.clone(), self.seq);
        }
        report
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[derive(Clone, Debug)]
pub struct Route {
    pub cell: CellId,
    pub version: u64,
    pub frozen_until: Option<DateTime<Utc>>,
}

/// A write the tenant makes: (table, key, value).
pub type Write = (String, u64, String);

pub struct World {
    pub now: DateTime<Utc>,
    pub ids: Ids,
    pub cells: BTreeMap<CellId, CellData>,
    pub route: Route,
    /// Held at the edge during a freeze.
    pub held: Vec<Write>,
    /// Refused (read-only cell): not acknowledged, the client resends.
    pub resend: Vec<Write>,
    /// Every acknowledged write, in order.
    pub acked: Vec<Write>,
    pub next_key: u64,
    /// Milliseconds each command takes.
    pub command_ms: i64,
    /// Extra milliseconds `Verify` takes.
    pub verify_ms: i64,
    /// Drop one row from the copy being moved to right before verifying.
    pub corrupt_target: bool,
    /// Writes the tenant makes between two commands.
    pub writes_per_command: u64,
}

impl World {
    /// A source holding 25 vehicles and 1,234 positions.
    pub fn new() -> Self {
        let ids = ids();
        let mut source = CellData::default();
        for k in 0..25 {
            source.apply("vehicles", k, Some(format!("vehicle {k}")));
        }
        for k in 0..1_234 {
            source.apply("positions", k, Some(format!("fix {k}")));
        }
        let mut cells = BTreeMap::new();
        cells.insert(ids.source, source);
        cells.insert(ids.target, CellData::default());
        World {
            now: t0(),
            route: Route {
                cell: ids.source,
                version: 1,
                frozen_until: None,
            },
            ids,
            cells,
            held: Vec::new(),
            resend: Vec::new(),
            acked: Vec::new(),
            next_key: 10_000,
            command_ms: 20,
            verify_ms: 0,
            corrupt_target: false,
            writes_per_command: 2,
        }
    }

    pub fn policy() -> MovePolicy {
        MovePolicy {
            chunk_rows: 500,
            catch_up_threshold: 3,
            ..MovePolicy::default()
        }
    }

    pub fn start(&self) -> Move {
        Move::start(
            self.ids.tenant,
            self.ids.source,
            None,
            tables(),
            None,
            Self::policy(),
            self.now,
        )
        .unwrap()
        .0
    }

    fn frozen(&self) -> bool {
        self.route
            .frozen_until
            .is_some_and(|until| self.now < until)
    }

    /// The tenant writes through the edge.
    pub fn tenant_writes(&mut self) {
        for _ in 0..self.writes_per_command {
            let key = self.next_key;
            self.next_key += 1;
            let table = if key % 5 == 0 {
                "vehicles"
            } else {
                "positions"
            };
            self.write((table.into(), key, format!("w{key}")));
        }
        // Clients resend what was refused.
        for w in std::mem::take(&mut self.resend) {
            self.write(w);
        }
    }

    fn write(&mut self, w: Write) {
        if self.frozen() {
            self.held.push(w);
            return;
        }
        let cell = self.cells.get_mut(&self.route.cell).unwrap();
        if cell.read_only {
            self.resend.push(w);
            return;
        }
        cell.apply(&w.0, w.1, Some(w.2.clone()));
        self.acked.push(w);
    }

    fn release_held(&mut self) {
        for w in std::mem::take(&mut self.held) {
            self.write(w);
        }
    }

    /// What the tenant should see: every acknowledged write applied.
    pub fn expected(&self) -> BTreeMap<String, Rows> {
        let mut rows = self.cells_at_start_expected();
        for (t, k, v) in &self.acked {
            rows.entry(t.clone()).or_default().insert(*k, v.clone());
        }
        rows
    }

    fn cells_at_start_expected(&self) -> BTreeMap<String, Rows> {
        let mut rows: BTreeMap<String, Rows> = BTreeMap::new();
        for k in 0..25 {
            rows.entry("vehicles".into())
                .or_default()
                .insert(k, format!("vehicle {k}"));
        }
        for k in 0..1_234 {
            rows.entry("positions".into())
                .or_default()
                .insert(k, format!("fix {k}"));
        }
        rows
    }

    /// The serving cell's rows.
    pub fn served(&self) -> BTreeMap<String, Rows> {
        self.cells[&self.route.cell].tables.clone()
    }

    /// Carry out one command, as the real components would.
    pub fn execute(&mut self, command: &Command) -> Event {
        self.now += TimeDelta::milliseconds(self.command_ms);
        match command.clone() {
            Command::ProvisionTarget { cell, .. } => Event::TargetReady {
                cell: cell.unwrap_or(self.ids.target),
            },
            Command::CopyChunk {
                from,
                to,
                table,
                cursor,
                limit,
                ..
            } => {
                let src = &self.cells[&from];
                let watermark = src.seq;
                let after: Option<u64> = cursor.map(|c| c.parse().unwrap());
                let rows: Vec<(u64, String)> = src
                    .tables
                    .get(&table)
                    .map(|r| {
                        r.iter()
                            .filter(|(k, _)| after.is_none_or(|a| **k > a))
                            .take(limit as usize)
                            .map(|(k, v)| (*k, v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let last = rows.last().map(|(k, _)| *k);
                let done = match last {
                    None => true,
                    Some(l) => !src.tables[&table].keys().any(|k| *k > l),
                };
                let dst = self.cells.get_mut(&to).unwrap();
                dst.present = true;
                for (k, v) in &rows {
                    dst.apply(&table, *k, Some(v.clone()));
                }
                Event::ChunkCopied {
                    table,
                    rows: rows.len() as u64,
                    next_cursor: last.map(|l| l.to_string()),
                    done,
                    watermark,
                }
            }
            Command::CatchUp {
                from,
                to,
                since,
                limit,
                ..
            } => {
                let src = self.cells[&from].clone();
                let pending: Vec<_> = src
                    .log
                    .iter()
                    .filter(|(seq, t, _, _)| *seq > since.get(t).copied().unwrap_or(0))
                    .take(limit as usize)
                    .cloned()
                    .collect();
                let more = src
                    .log
                    .iter()
                    .filter(|(seq, t, _, _)| *seq > since.get(t).copied().unwrap_or(0))
                    .count()
                    > pending.len();
                let dst = self.cells.get_mut(&to).unwrap();
                for (_, t, k, v) in &pending {
                    dst.apply(t, *k, v.clone());
                }
                let upto = if more {
                    pending.last().map(|p| p.0).unwrap_or(0)
                } else {
                    src.seq
                };
                let watermarks = tables()
                    .into_iter()
                    .map(|t| {
                        let had = since.get(&t).copied().unwrap_or(0);
                        (t, had.max(upto))
                    })
                    .collect();
                Event::CaughtUp {
                    changes: pending.len() as u64,
                    watermarks,
                    more,
                }
            }
            Command::Freeze { deadline, .. } => {
                if !self.frozen() {
                    self.route.frozen_until = Some(deadline);
                    self.route.version += 1;
                }
                Event::Frozen {
                    at: self.now,
                    routing_version: self.route.version,
                }
            }
            Command::MakeReadOnly { cell, .. } => {
                self.cells.get_mut(&cell).unwrap().read_only = true;
                Event::ReadOnly { cell }
            }
            Command::MakeWritable { cell, .. } => {
                self.cells.get_mut(&cell).unwrap().read_only = false;
                Event::Writable { cell }
            }
            Command::Verify {
                from, to, tables, ..
            } => {
                self.now += TimeDelta::milliseconds(self.verify_ms);
                if self.corrupt_target {
                    let dst = self.cells.get_mut(&to).unwrap();
                    let rows = dst.tables.get_mut("positions").unwrap();
                    let first = *rows.keys().next().unwrap();
                    rows.remove(&first);
                }
                Event::Verified {
                    source: self.cells[&from].sums(&tables),
                    target: self.cells[&to].sums(&tables),
                }
            }
            Command::SwitchRouting {
                from_version,
                from_cell,
                to_cell,
                ..
            } => {
                if self.route.cell == to_cell && self.route.version > from_version {
                    Event::Switched {
                        version: self.route.version,
                    }
                } else if self.route.cell == from_cell
                    && self.route.version == from_version
                    && self.frozen()
                {
                    self.route.cell = to_cell;
                    self.route.version += 1;
                    Event::Switched {
                        version: self.route.version,
                    }
                } else {
                    Event::StepFailed {
                        step: CommandKind::SwitchRouting,
                        error: "routing entry changed or freeze expired".into(),
                        retryable: false,
                    }
                }
            }
            Command::Unfreeze { .. } => {
                self.route.frozen_until = None;
                self.release_held();
                Event::Unfrozen
            }
            Command::DeleteCopy { cell, .. } => {
                let c = self.cells.get_mut(&cell).unwrap();
                *c = CellData::default();
                Event::CopyDeleted { cell }
            }
            Command::WaitUntil { at } => {
                self.now = self.now.max(at);
                Event::Tick
            }
        }
    }

    /// Drive `m` until it stops at `until` (a state name) or finishes.
    /// `crash_at`: at that command's index, carry it out, lose the answer,
    /// and resume from the persisted move (the previous JSON).
    pub fn drive(&mut self, mut m: Move, until: Option<&str>, crash_at: Option<usize>) -> Move {
        let mut persisted = serde_json::to_string(&m).unwrap();
        for i in 0..10_000 {
            if until == Some(m.phase.name()) {
                return m;
            }
            let commands = resume(&m);
            let Some(first) = commands.first() else {
                return m;
            };
            self.tenant_writes();
            let event = self.execute(first);
            if crash_at == Some(i) {
                // The process dies: the answer is lost, the move is read back.
                m = serde_json::from_str(&persisted).unwrap();
                continue;
            }
            m = step(&m, event, self.now)
                .unwrap_or_else(|e| panic!("step {i} in {}: {e}", m.phase.name()))
                .0;
            persisted = serde_json::to_string(&m).unwrap();
        }
        panic!("the move did not finish");
    }
}
