//! Comparing the two sides' verification reports. The cells compute the
//! sums (row count and an order-independent checksum over a canonical
//! encoding of each row, per table, over the same history window); this
//! crate only says whether they agree, and if not, in words.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// One table's sum on one side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSum {
    pub rows: u64,
    /// Order-independent checksum (e.g. a sum or XOR of per-row hashes)
    /// over the canonical encoding of the rows, as the cell writes it.
    pub checksum: String,
}

/// What one side reports from `Verify`: the sums per table, and the side's
/// change sequence per table at the moment the sums were taken (the point
/// a later rollback's reverse catch-up starts from; empty means "from the
/// beginning", which is correct and only slower).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub tables: BTreeMap<String, TableSum>,
    #[serde(default)]
    pub watermarks: BTreeMap<String, u64>,
}

/// Which side of a comparison: the copy being left, or the one being
/// moved to (in a rollback the roles of the cells are reversed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Source,
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

/// One disagreement between the two sides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mismatch {
    Rows {
        table: String,
        source: u64,
        target: u64,
    },
    Checksum {
        table: String,
        source: String,
        target: String,
    },
    Missing {
        table: String,
        on: Side,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Rows {
                table,
                source,
                target,
            } => write!(
                f,
                "{table}: {} rows vs {}",
                thousands(*source),
                thousands(*target)
            ),
            Mismatch::Checksum {
                table,
                source,
                target,
            } => write!(f, "{table}: checksums differ ({source} vs {target})"),
            Mismatch::Missing { table, on } => write!(f, "{table}: missing on the {on}"),
        }
    }
}

/// Every disagreement between `source` and `target` over `tables` and any
/// table either side reported. Empty means the copies are equal. A row
/// count difference is reported instead of the (then necessarily
/// different) checksums.
pub fn mismatches(
    tables: &[String],
    source: &VerifyReport,
    target: &VerifyReport,
) -> Vec<Mismatch> {
    let names: BTreeSet<&String> = tables
        .iter()
        .chain(source.tables.keys())
        .chain(target.tables.keys())
        .collect();
    let mut found = Vec::new();
    for table in names {
        match (source.tables.get(table), target.tables.get(table)) {
            (None, _) => found.push(Mismatch::Missing {
                table: table.clone(),
                on: Side::Source,
            }),
            (_, None) => found.push(Mismatch::Missing {
                table: table.clone(),
                on: Side::Target,
            }),
            (Some(s), Some(t)) if s.rows != t.rows => found.push(Mismatch::Rows {
                table: table.clone(),
                source: s.rows,
                target: t.rows,
            }),
            (Some(s), Some(t)) if s.checksum != t.checksum => found.push(Mismatch::Checksum {
                table: table.clone(),
                source: s.checksum.clone(),
                target: t.checksum.clone(),
            }),
            _ => {}
        }
    }
    found
}

/// The mismatches as one sentence, for an abort reason.
pub fn describe(found: &[Mismatch]) -> String {
    found
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// `1000000` → `1,000,000`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(entries: &[(&str, u64, &str)]) -> VerifyReport {
        VerifyReport {
            tables: entries
                .iter()
                .map(|(t, rows, sum)| {
                    (
                        t.to_string(),
                        TableSum {
                            rows: *rows,
                            checksum: sum.to_string(),
                        },
                    )
                })
                .collect(),
            watermarks: BTreeMap::new(),
        }
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(999_999), "999,999");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn equal_reports_have_no_mismatch() {
        let a = report(&[("positions", 10, "ab"), ("vehicles", 2, "cd")]);
        assert!(mismatches(&["positions".into(), "vehicles".into()], &a, &a.clone()).is_empty());
    }

    #[test]
    fn mismatches_in_words() {
        let tables = vec!["positions".to_string(), "vehicles".into(), "events".into()];
        let source = report(&[("positions", 1_000_000, "aa"), ("vehicles", 3, "x1")]);
        let target = report(&[
            ("positions", 999_999, "bb"),
            ("vehicles", 3, "x2"),
            ("geofences", 1, "g"),
        ]);
        let found = mismatches(&tables, &source, &target);
        assert_eq!(
            describe(&found),
            "events: missing on the source; geofences: missing on the source; \
             positions: 1,000,000 rows vs 999,999; vehicles: checksums differ (x1 vs x2)"
        );
        let only_source = report(&[("events", 1, "e")]);
        let found = mismatches(
            &["events".to_string()],
            &only_source,
            &VerifyReport::default(),
        );
        assert_eq!(describe(&found), "events: missing on the target");
    }
}
