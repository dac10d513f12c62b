/// What a storage call can fail with. `NotFound` and `Conflict` are answers
/// about the data and become 4xx; `Unexpected` is everything else.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(Conflict),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a write was refused by the data already stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("device_id '{0}' is already registered")]
    DeviceTaken(String),
    #[error("the plan allows {limit} vehicles and all are in use")]
    VehicleLimit { limit: u32 },
    #[error("a cell named '{0}' already exists")]
    CellNameTaken(String),
    /// The tenant is being moved already (its move's id).
    #[error("the tenant is being moved already (migration {0})")]
    MoveInProgress(uuid::Uuid),
    /// A background job is not in a state the action applies to.
    #[error(transparent)]
    Job(crate::JobConflict),
}

pub type StorageResult<T> = Result<T, StorageError>;
