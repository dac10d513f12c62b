//! What a tenant uses of its cell, as the cell measures it.

use serde::{Deserialize, Serialize};

/// One tenant's measured use of its cell: what it keeps (positions and the
/// bytes they take) and what it does over a window of days (positions
/// ingested, API requests). The operator's economics attribute a cell's
/// cost to its tenants by these figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = UsageFigures)]
pub struct Usage {
    /// Positions in the tenant's history now.
    pub positions_stored: u64,
    /// The bytes its history takes: the cell's position storage (table and
    /// indexes) in the tenant's share of its rows.
    pub storage_bytes: u64,
    /// Positions stored for it over the window (resends not counted).
    pub positions_ingested: u64,
    /// Its API requests (REST, GraphQL, live connections) over the window.
    pub api_requests: u64,
}

impl Usage {
    /// The days `positions_ingested` and `api_requests` cover, today
    /// included.
    pub const WINDOW_DAYS: u32 = 30;

    /// Requests and positions together: the work the tenant asked of the
    /// cell over the window.
    pub fn work(&self) -> u64 {
        self.positions_ingested.saturating_add(self.api_requests)
    }
}
