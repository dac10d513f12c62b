//! What customers cost and earn: per plan at full capacity (the catalog's
//! promise) and now (the cells that exist and the tenants on them).
//!
//! A cell's monthly cost is attributed to the tenants on it by what they
//! use, as the cell measured it (`Usage`, collected hourly): half by the
//! bytes their history takes (disk), half by their work over 30 days —
//! positions ingested plus API requests (CPU). A half nobody on the cell
//! used is shared equally, and a cell none of whose tenants has been
//! measured yet shares its whole cost equally. A plan's cost now is the sum
//! of its tenants' shares; the tenants whose share exceeds their price are
//! listed, least profitable first. Money is in US cents (exact, as decimals
//! where divided) with dollar figures rounded to the cent for people.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;
use webhost_domain::{Catalog, CellId, TenantId, Usage};
use webhost_storage::{Cell, CellStatus, TenantPlacement, TenantStatus};

/// How many of the least profitable tenants the view lists by default.
pub const DEFAULT_TENANTS: u32 = 20;

/// The economics view.
#[derive(Serialize, ToSchema)]
pub struct Economics {
    pub currency: &'static str,
    pub plans: Vec<PlanEconomics>,
    pub cells: Vec<CellEconomics>,
    /// The least profitable tenants first (at most the `tenants` asked).
    pub tenants: Vec<TenantEconomics>,
    pub totals: Totals,
}

/// One tenant: its price, its share of its cell's cost and what it used.
#[derive(Serialize, ToSchema)]
pub struct TenantEconomics {
    pub tenant_id: TenantId,
    pub company: String,
    pub plan: String,
    pub cell: String,
    pub price_cents: i64,
    /// Its share of the cell's monthly cost.
    pub cost_cents: f64,
    pub margin_cents: f64,
    /// `usage` or `equal` (its cell has no measurements yet).
    pub attribution: &'static str,
    /// As last measured; `null` before the first report.
    pub usage: Option<Usage>,
}

/// One plan.
#[derive(Serialize, ToSchema)]
pub struct PlanEconomics {
    pub plan: String,
    pub price_cents: i64,
    /// The cell template this plan's tenants are placed on.
    pub template: String,
    pub cell_cost_cents: i64,
    /// Tenants of this plan one such cell holds.
    pub capacity: u32,
    /// On a full cell.
    pub at_capacity: Unit,
    /// Tenants of this plan that would pay for one cell on their own.
    pub break_even_tenants: u32,
    /// Active tenants now.
    pub tenants: u32,
    pub revenue_cents: i64,
    /// Their shares of the cells they are on.
    pub cost_cents: f64,
    /// `null` without tenants.
    pub margin_percent: Option<f64>,
}

/// What one customer costs and leaves.
#[derive(Serialize, ToSchema)]
pub struct Unit {
    pub cost_per_customer_cents: f64,
    /// Dollars, rounded to the cent.
    pub cost_per_customer: f64,
    /// Rounded to a whole percent.
    pub margin_percent: f64,
}

/// One cell.
#[derive(Serialize, ToSchema)]
pub struct CellEconomics {
    pub cell_id: CellId,
    pub cell: String,
    pub pool: String,
    pub region: String,
    pub status: String,
    pub provider: String,
    pub monthly_cost_cents: i64,
    pub tenants: u32,
    pub capacity: u32,
    pub utilisation: f64,
    /// `null` without tenants.
    pub cost_per_customer_cents: Option<f64>,
    pub revenue_cents: i64,
    /// `null` without revenue.
    pub margin_percent: Option<f64>,
    /// Tenants at the cell's average price (its template plan's price when
    /// it is empty) needed to pay for it.
    pub break_even_tenants: u32,
    /// The tenant shares that cost more than they pay here.
    pub losing_tenants: u32,
    /// A stop-gap cell (see `/api/admin/cells`): its cost is temporary.
    pub stop_gap: bool,
    /// How the cost is shared: `usage` (measured) or `equal` (nothing
    /// measured yet, or no tenants).
    pub attribution: &'static str,
}

/// Everything together.
#[derive(Serialize, ToSchema)]
pub struct Totals {
    pub revenue_cents: i64,
    pub cost_cents: i64,
    pub margin_percent: Option<f64>,
    pub tenants: u32,
    pub cells: u32,
    /// Tenants whose share of cost exceeds their price.
    pub losing_tenants: u32,
    /// What the stop-gap cells (cloud servers standing in while dedicated
    /// servers are delivered) cost a month, included in `cost_cents`.
    pub stop_gap_cost_cents: i64,
}

fn margin(revenue: f64, cost: f64) -> Option<f64> {
    (revenue > 0.0).then(|| round1((revenue - cost) / revenue * 100.0))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn break_even(cost: i64, price: f64) -> u32 {
    if price <= 0.0 {
        return 0;
    }
    let tenants = (cost as f64 / price).ceil();
    if tenants >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        tenants as u32
    }
}

/// Each tenant's share of `cost`, in the order given, and whether usage
/// decided it (see the module's note).
pub fn attribute(cost: f64, usage: &[Option<Usage>]) -> (Vec<f64>, bool) {
    let n = usage.len();
    if n == 0 {
        return (Vec::new(), false);
    }
    if usage.iter().all(Option::is_none) {
        return (vec![cost / n as f64; n], false);
    }
    let measured = |f: fn(&Usage) -> u64| -> Vec<f64> {
        usage
            .iter()
            .map(|u| u.as_ref().map_or(0.0, |u| f(u) as f64))
            .collect()
    };
    let half = |weights: Vec<f64>| -> Vec<f64> {
        let total: f64 = weights.iter().sum();
        if total > 0.0 {
            weights.iter().map(|w| cost / 2.0 * w / total).collect()
        } else {
            vec![cost / 2.0 / n as f64; n]
        }
    };
    let disk = half(measured(|u| u.storage_bytes));
    let work = half(measured(Usage::work));
    (disk.iter().zip(&work).map(|(d, w)| d + w).collect(), true)
}

/// The view, from the catalog, the cells and every tenant's placement;
/// `listed` least profitable tenants.
pub fn compute(
    catalog: &Catalog,
    cells: &[Cell],
    tenants: &[TenantPlacement],
    listed: usize,
) -> Economics {
    let price = |plan: &webhost_domain::PlanName| {
        catalog
            .plans
            .iter()
            .find(|p| &p.name == plan)
            .map_or(0, |p| p.price_cents)
    };
    let paying = |t: &&TenantPlacement| t.tenant.status == TenantStatus::Active;
    let costing = |c: &&Cell| !matches!(c.status, CellStatus::Failed | CellStatus::Retired);

    let mut per_cell: BTreeMap<CellId, Vec<&TenantPlacement>> = BTreeMap::new();
    for tenant in tenants.iter().filter(paying) {
        per_cell.entry(tenant.cell_id).or_default().push(tenant);
    }

    let mut plan_cost: BTreeMap<String, f64> = BTreeMap::new();
    let mut tenant_rows = Vec::new();
    let mut cell_rows = Vec::new();
    for cell in cells.iter().filter(costing) {
        let on = per_cell.get(&cell.id).map(Vec::as_slice).unwrap_or(&[]);
        let count = u32::try_from(on.len()).unwrap_or(u32::MAX);
        let revenue: i64 = on.iter().map(|t| price(&t.tenant.plan)).sum();
        let usage: Vec<Option<Usage>> = on.iter().map(|t| t.usage.map(|m| m.usage)).collect();
        let (shares, measured) = attribute(cell.monthly_cost_cents as f64, &usage);
        let attribution = if measured { "usage" } else { "equal" };
        let mut losing = 0u32;
        for (t, share) in on.iter().zip(&shares) {
            let paid = price(&t.tenant.plan);
            *plan_cost.entry(t.tenant.plan.to_string()).or_default() += share;
            if (paid as f64) < *share {
                losing += 1;
            }
            tenant_rows.push(TenantEconomics {
                tenant_id: t.tenant.id,
                company: t.tenant.company.to_string(),
                plan: t.tenant.plan.to_string(),
                cell: cell.name.clone(),
                price_cents: paid,
                cost_cents: round1(*share),
                margin_cents: round1(paid as f64 - share),
                attribution,
                usage: t.usage.map(|m| m.usage),
            });
        }
        let average_price = if count > 0 {
            revenue as f64 / f64::from(count)
        } else {
            catalog
                .cell_templates
                .iter()
                .find(|t| t.pool == cell.pool && t.capacity == cell.capacity)
                .map_or(0.0, |t| price(&t.plan) as f64)
        };
        cell_rows.push(CellEconomics {
            cell_id: cell.id,
            cell: cell.name.clone(),
            pool: cell.pool.to_string(),
            region: cell.region.to_string(),
            status: cell.status.as_str().into(),
            provider: cell.provider.as_str().into(),
            monthly_cost_cents: cell.monthly_cost_cents,
            tenants: count,
            capacity: cell.capacity,
            utilisation: f64::from(count) / f64::from(cell.capacity.max(1)),
            cost_per_customer_cents: (count > 0)
                .then(|| cell.monthly_cost_cents as f64 / f64::from(count)),
            revenue_cents: revenue,
            margin_percent: margin(revenue as f64, cell.monthly_cost_cents as f64),
            break_even_tenants: break_even(cell.monthly_cost_cents, average_price),
            losing_tenants: losing,
            stop_gap: catalog.is_stop_gap(cell.template.as_deref()),
            attribution,
        });
    }
    let losing_tenants = u32::try_from(tenant_rows.iter().filter(|t| t.margin_cents < 0.0).count())
        .unwrap_or(u32::MAX);
    tenant_rows.sort_by(|a, b| {
        a.margin_cents
            .total_cmp(&b.margin_cents)
            .then(a.tenant_id.cmp(&b.tenant_id))
    });
    tenant_rows.truncate(listed);

    let plans = catalog
        .plans
        .iter()
        .filter_map(|plan| {
            let template = catalog.template_for(&plan.pool, &plan.name)?;
            let per_customer =
                template.monthly_cost_cents as f64 / f64::from(template.capacity.max(1));
            let on: Vec<_> = tenants
                .iter()
                .filter(paying)
                .filter(|t| t.tenant.plan == plan.name)
                .collect();
            let revenue = plan.price_cents * on.len() as i64;
            let cost = plan_cost.get(plan.name.as_str()).copied().unwrap_or(0.0);
            Some(PlanEconomics {
                plan: plan.name.to_string(),
                price_cents: plan.price_cents,
                template: template.name.clone(),
                cell_cost_cents: template.monthly_cost_cents,
                capacity: template.capacity,
                at_capacity: Unit {
                    cost_per_customer_cents: per_customer,
                    cost_per_customer: (per_customer).round() / 100.0,
                    margin_percent: ((plan.price_cents as f64 - per_customer)
                        / plan.price_cents as f64
                        * 100.0)
                        .round(),
                },
                break_even_tenants: break_even(
                    template.monthly_cost_cents,
                    plan.price_cents as f64,
                ),
                tenants: u32::try_from(on.len()).unwrap_or(u32::MAX),
                revenue_cents: revenue,
                cost_cents: cost,
                margin_percent: margin(revenue as f64, cost),
            })
        })
        .collect();

    let revenue: i64 = cell_rows.iter().map(|c| c.revenue_cents).sum();
    let cost: i64 = cell_rows.iter().map(|c| c.monthly_cost_cents).sum();
    Economics {
        currency: "USD",
        plans,
        totals: Totals {
            revenue_cents: revenue,
            cost_cents: cost,
            margin_percent: margin(revenue as f64, cost as f64),
            tenants: u32::try_from(tenants.iter().filter(paying).count()).unwrap_or(u32::MAX),
            cells: u32::try_from(cell_rows.len()).unwrap_or(u32::MAX),
            losing_tenants,
            stop_gap_cost_cents: cell_rows
                .iter()
                .filter(|c| c.stop_gap)
                .map(|c| c.monthly_cost_cents)
                .sum(),
        },
        cells: cell_rows,
        tenants: tenant_rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's figures, from the default catalog alone.
    #[test]
    fn the_default_catalog_at_full_capacity_gives_the_seed_figures() {
        let economics = compute(&Catalog::default_seed(), &[], &[], 0);
        let figures: Vec<(&str, f64, f64, u32)> = economics
            .plans
            .iter()
            .map(|p| {
                (
                    p.plan.as_str(),
                    p.at_capacity.cost_per_customer,
                    p.at_capacity.margin_percent,
                    p.break_even_tenants,
                )
            })
            .collect();
        assert_eq!(
            figures,
            vec![
                ("hobby", 0.43, 97.0, 5),
                ("starter", 4.00, 92.0, 9),
                ("professional", 16.00, 89.0, 6),
                ("business", 60.00, 85.0, 4),
            ]
        );
        assert_eq!(economics.totals.revenue_cents, 0);
        assert_eq!(economics.totals.margin_percent, None);
    }

    fn used(bytes: u64, work: u64) -> Option<Usage> {
        Some(Usage {
            positions_stored: bytes / 100,
            storage_bytes: bytes,
            positions_ingested: work,
            api_requests: 0,
        })
    }

    #[test]
    fn cost_follows_measured_use_half_disk_half_work() {
        // One tenant holds 3/4 of the bytes and does 1/4 of the work.
        let (shares, measured) = attribute(100.0, &[used(300, 10), used(100, 30)]);
        assert!(measured);
        assert_eq!(shares, vec![37.5 + 12.5, 12.5 + 37.5]);

        // An idle tenant among busy ones pays next to nothing.
        let (shares, _) = attribute(90.0, &[used(0, 0), used(500, 50), used(500, 50)]);
        assert_eq!(shares, vec![0.0, 45.0, 45.0]);

        // Nobody used any disk yet: that half is shared equally.
        let (shares, _) = attribute(100.0, &[used(0, 1), used(0, 3)]);
        assert_eq!(shares, vec![25.0 + 12.5, 25.0 + 37.5]);
    }

    #[test]
    fn without_measurements_the_cost_is_shared_equally() {
        let (shares, measured) = attribute(90.0, &[None, None, None]);
        assert!(!measured);
        assert_eq!(shares, vec![30.0; 3]);
        assert_eq!(attribute(90.0, &[]), (vec![], false));
        let total: f64 = attribute(77.0, &[None, used(1, 2), used(5, 0)])
            .0
            .iter()
            .sum();
        assert!(
            (total - 77.0).abs() < 1e-9,
            "the whole cost is attributed: {total}"
        );
    }
}
