//! The catalog of plans, pools, regions and cell templates (SPEC §1), and the
//! placement rules over it. The catalog is data: the default below seeds a new
//! control plane, and the operator may change it afterwards.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::values::{CountryCode, PlanName, PoolName, RegionCode};

/// How a plan picks its primary region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "region")]
pub enum RegionRule {
    /// Always this region (hobby: `fsn1`).
    Fixed(RegionCode),
    /// The customer's country decides, through `Catalog::country_regions`.
    ByCountry,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: PlanName,
    pub price_cents: i64,
    pub max_vehicles: u32,
    pub retention_days: u32,
    pub pool: PoolName,
    pub primary: RegionRule,
    /// Regions the plan also runs in besides the primary one.
    #[serde(default)]
    pub extra_regions: Vec<RegionCode>,
    /// Requests per second a tenant on this plan may make through the edge.
    pub rate_limit_per_second: u32,
}

/// Who creates and destroys cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Cells in this process / on this machine: the embedded default.
    Local,
    Hetzner,
    Fly,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Hetzner => "hetzner",
            Self::Fly => "fly",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "local" => Some(Self::Local),
            "hetzner" => Some(Self::Hetzner),
            "fly" => Some(Self::Fly),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub name: PoolName,
    /// The provider that creates this pool's cells in production.
    pub provider: ProviderKind,
    pub regions: Vec<RegionCode>,
    /// When fewer tenant slots than this are free in one of the pool's
    /// regions (active and provisioning cells together), the next cell is
    /// provisioned ahead of need, so that signups rarely wait for one.
    #[serde(default)]
    pub spare_slots: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionSettings {
    pub code: RegionCode,
    pub timezone: String,
    pub currency: String,
    pub locale: String,
}

/// What kind of server a template asks of a provider that offers two
/// (Hetzner: dedicated servers through Robot, cloud servers through the
/// Cloud API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    Dedicated,
    Cloud,
}

impl ServerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dedicated => "dedicated",
            Self::Cloud => "cloud",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "dedicated" => Some(Self::Dedicated),
            "cloud" => Some(Self::Cloud),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellTemplate {
    pub name: String,
    pub pool: PoolName,
    /// The plan whose tenants this template is sized for.
    pub plan: PlanName,
    pub monthly_cost_cents: i64,
    /// How many tenants of `plan` one cell holds.
    pub capacity: u32,
    /// The kind of server, for a provider that offers two; `None`: the
    /// provider's only (or usual) kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ServerKind>,
    /// The provider's product: a Robot product (`AX52`), a Cloud server
    /// type (`cx42`); `None`: the provider's configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// A stop-gap: placement uses it only while no cell from the pool's
    /// other templates has room (a dedicated server takes minutes to days
    /// to deliver), and tenants placed on it are marked for moving.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_gap: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub plans: Vec<Plan>,
    pub pools: Vec<Pool>,
    pub regions: Vec<RegionSettings>,
    pub country_regions: BTreeMap<CountryCode, RegionCode>,
    pub default_region: RegionCode,
    pub cell_templates: Vec<CellTemplate>,
}

/// Where a tenant runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub pool: PoolName,
    /// The region holding the tenant's primary data.
    pub region: RegionCode,
    /// All regions of the plan, primary first.
    pub regions: Vec<RegionCode>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("unknown plan '{plan}'; choose one of: {known}")]
    UnknownPlan { plan: String, known: String },
    #[error("plan '{plan}' is not offered in region '{region}'; choose one of: {offered}")]
    RegionNotOffered {
        plan: String,
        region: String,
        offered: String,
    },
    #[error("the catalog has no pool '{0}'")]
    MissingPool(String),
}

const DEFAULT_CATALOG: &str = include_str!("default_catalog.json");

impl Catalog {
    /// The catalog of SPEC §1, used to seed a new control plane.
    pub fn default_seed() -> Self {
        serde_json::from_str(DEFAULT_CATALOG).expect("default_catalog.json is valid")
    }

    pub fn plan(&self, name: &PlanName) -> Result<&Plan, PlacementError> {
        self.plans
            .iter()
            .find(|p| &p.name == name)
            .ok_or_else(|| PlacementError::UnknownPlan {
                plan: name.to_string(),
                known: self.plan_names(),
            })
    }

    pub fn pool(&self, name: &PoolName) -> Option<&Pool> {
        self.pools.iter().find(|p| &p.name == name)
    }

    pub fn region(&self, code: &RegionCode) -> Option<&RegionSettings> {
        self.regions.iter().find(|r| &r.code == code)
    }

    pub fn template_for(&self, pool: &PoolName, plan: &PlanName) -> Option<&CellTemplate> {
        let regular = || self.cell_templates.iter().filter(|t| !t.stop_gap);
        regular()
            .find(|t| &t.pool == pool && &t.plan == plan)
            .or_else(|| regular().find(|t| &t.pool == pool))
    }

    /// The pool's stop-gap template for `plan`'s tenants, if it has one.
    pub fn stop_gap_for(&self, pool: &PoolName, plan: &PlanName) -> Option<&CellTemplate> {
        let gaps = || self.cell_templates.iter().filter(|t| t.stop_gap);
        gaps()
            .find(|t| &t.pool == pool && &t.plan == plan)
            .or_else(|| gaps().find(|t| &t.pool == pool))
    }

    /// Whether the template named `name` is a stop-gap.
    pub fn is_stop_gap(&self, name: Option<&str>) -> bool {
        name.is_some_and(|name| {
            self.cell_templates
                .iter()
                .any(|t| t.name == name && t.stop_gap)
        })
    }

    fn plan_names(&self) -> String {
        self.plans
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Plan → pool, country → region, with the customer's optional choice
    /// of region (data residency) when the plan's pool offers it.
    pub fn place(
        &self,
        plan: &PlanName,
        country: &CountryCode,
        requested: Option<&RegionCode>,
    ) -> Result<Placement, PlacementError> {
        let plan = self.plan(plan)?;
        let pool = self
            .pool(&plan.pool)
            .ok_or_else(|| PlacementError::MissingPool(plan.pool.to_string()))?;
        let offered = |region: &RegionCode| pool.regions.contains(region);

        let primary = match (&plan.primary, requested) {
            (RegionRule::Fixed(fixed), Some(asked)) if asked != fixed => {
                return Err(PlacementError::RegionNotOffered {
                    plan: plan.name.to_string(),
                    region: asked.to_string(),
                    offered: fixed.to_string(),
                })
            }
            (RegionRule::Fixed(fixed), _) => fixed.clone(),
            (RegionRule::ByCountry, Some(asked)) => {
                if !offered(asked) {
                    return Err(PlacementError::RegionNotOffered {
                        plan: plan.name.to_string(),
                        region: asked.to_string(),
                        offered: pool
                            .regions
                            .iter()
                            .map(RegionCode::as_str)
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
                asked.clone()
            }
            (RegionRule::ByCountry, None) => {
                let by_country = self
                    .country_regions
                    .get(country)
                    .unwrap_or(&self.default_region);
                if offered(by_country) {
                    by_country.clone()
                } else {
                    pool.regions
                        .first()
                        .cloned()
                        .ok_or_else(|| PlacementError::MissingPool(pool.name.to_string()))?
                }
            }
        };

        let mut regions = vec![primary.clone()];
        for extra in &plan.extra_regions {
            if !regions.contains(extra) {
                regions.push(extra.clone());
            }
        }
        Ok(Placement {
            pool: pool.name.clone(),
            region: primary,
            regions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hobby_pool_has_a_dedicated_template_and_a_cloud_stop_gap() {
        let c = Catalog::default_seed();
        let pool = PoolName::parse("hetzner").unwrap();
        let hobby = PlanName::parse("hobby").unwrap();
        let regular = c.template_for(&pool, &hobby).expect("regular");
        assert_eq!(
            (regular.name.as_str(), regular.kind, regular.stop_gap),
            ("hetzner-ax52", Some(ServerKind::Dedicated), false)
        );
        let gap = c.stop_gap_for(&pool, &hobby).expect("stop-gap");
        assert_eq!(
            (gap.name.as_str(), gap.kind, gap.product.as_deref()),
            ("hetzner-cloud-cx42", Some(ServerKind::Cloud), Some("cx42"))
        );
        assert!(c.is_stop_gap(Some("hetzner-cloud-cx42")));
        assert!(!c.is_stop_gap(Some("hetzner-ax52")));
        assert!(!c.is_stop_gap(None));
        // The fly pool has none.
        let fly = PoolName::parse("fly").unwrap();
        assert!(c
            .stop_gap_for(&fly, &PlanName::parse("starter").unwrap())
            .is_none());
        // A catalog written before templates had kinds still reads.
        let old: CellTemplate = serde_json::from_str(
            r#"{"name":"x","pool":"hetzner","plan":"hobby","monthly_cost_cents":1,"capacity":2}"#,
        )
        .unwrap();
        assert_eq!((old.kind, old.product, old.stop_gap), (None, None, false));
    }

    fn place(plan: &str, country: &str, region: Option<&str>) -> Result<Placement, PlacementError> {
        Catalog::default_seed().place(
            &PlanName::parse(plan).unwrap(),
            &CountryCode::parse(country).unwrap(),
            region.map(|r| RegionCode::parse(r).unwrap()).as_ref(),
        )
    }

    fn regions(p: &Placement) -> Vec<&str> {
        p.regions.iter().map(RegionCode::as_str).collect()
    }

    #[test]
    fn default_catalog_matches_spec_table() {
        let c = Catalog::default_seed();
        let row = |n: &str| c.plan(&PlanName::parse(n).unwrap()).unwrap().clone();
        let hobby = row("hobby");
        assert_eq!(
            (hobby.price_cents, hobby.max_vehicles, hobby.retention_days),
            (1500, 5, 30)
        );
        let starter = row("starter");
        assert_eq!(
            (
                starter.price_cents,
                starter.max_vehicles,
                starter.retention_days
            ),
            (4900, 25, 90)
        );
        let pro = row("professional");
        assert_eq!(
            (pro.price_cents, pro.max_vehicles, pro.retention_days),
            (14900, 100, 365)
        );
        let biz = row("business");
        assert_eq!(
            (biz.price_cents, biz.max_vehicles, biz.retention_days),
            (39900, 500, 1095)
        );
        assert_eq!(c.cell_templates.len(), 5);
        for r in ["iad", "fra", "sin", "fsn1"] {
            assert!(c.region(&RegionCode::parse(r).unwrap()).is_some(), "{r}");
        }
    }

    #[test]
    fn placement_follows_plan_and_country() {
        let hobby = place("hobby", "DE", None).unwrap();
        assert_eq!(
            (hobby.pool.as_str(), hobby.region.as_str()),
            ("hetzner", "fsn1")
        );
        assert_eq!(place("hobby", "US", None).unwrap().region.as_str(), "fsn1");

        let starter = place("starter", "US", None).unwrap();
        assert_eq!(
            (starter.pool.as_str(), starter.region.as_str()),
            ("fly", "iad")
        );
        assert_eq!(regions(&starter), ["iad"]);
        assert_eq!(place("starter", "FR", None).unwrap().region.as_str(), "fra");
        assert_eq!(place("starter", "AT", None).unwrap().region.as_str(), "fra");
        assert_eq!(place("starter", "JP", None).unwrap().region.as_str(), "sin");
        assert_eq!(place("starter", "BR", None).unwrap().region.as_str(), "iad");

        assert_eq!(
            regions(&place("professional", "SG", None).unwrap()),
            ["sin", "fra"]
        );
        assert_eq!(
            regions(&place("professional", "DE", None).unwrap()),
            ["fra"]
        );
        assert_eq!(
            regions(&place("business", "MX", None).unwrap()),
            ["iad", "fra", "sin"]
        );
        assert_eq!(
            regions(&place("business", "AU", None).unwrap()),
            ["sin", "iad", "fra"]
        );
    }

    #[test]
    fn requested_region_overrides_country_when_offered() {
        assert_eq!(
            place("starter", "US", Some("fra")).unwrap().region.as_str(),
            "fra"
        );
        assert!(matches!(
            place("starter", "US", Some("fsn1")),
            Err(PlacementError::RegionNotOffered { .. })
        ));
        assert_eq!(
            place("hobby", "US", Some("fsn1")).unwrap().region.as_str(),
            "fsn1"
        );
        assert!(matches!(
            place("hobby", "US", Some("iad")),
            Err(PlacementError::RegionNotOffered { .. })
        ));
    }

    #[test]
    fn unknown_plan_names_the_known_ones() {
        let err = place("platinum", "US", None).unwrap_err();
        assert!(
            err.to_string()
                .contains("hobby, starter, professional, business"),
            "{err}"
        );
    }
}
