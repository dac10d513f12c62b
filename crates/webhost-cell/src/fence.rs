//! The write fence of a tenant being moved (SPEC §6): while it is up, the
//! cell stores nothing of the tenant's — API writes are answered `503` with
//! [`READ_ONLY_HEADER`] (the edge holds and resends them where the route
//! then points), device fixes are refused in
//! [`DeviceIngestAnswer::read_only`](webhost_contract::DeviceIngestAnswer),
//! and the offline sweep leaves the tenant alone — only the move's own
//! imports apply. Both ends of a move use it: the source from the freeze on
//! (so nothing lands there after the final catch-up), the target from its
//! first import until the switch (so its sweeper raises no event on a copy
//! nobody reports to yet).
//!
//! **Every accepted write is before the fence or refused.** A write holds a
//! shared [`WritePermit`] from its check until its commit; raising the fence
//! sets the flag and then takes the permit exclusively once, which waits
//! for the writes that checked before the flag was set. So when
//! `PUT …/fence {read_only: true}` answers, every write the cell accepted
//! for the tenant is committed, and the final catch-up that follows reads
//! all of them.
//!
//! The flag is persisted (`CellStore::set_read_only`) and loaded on first
//! use, so a restarted cell keeps refusing.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OnceCell, RwLock as AsyncRwLock, RwLockReadGuard};
use webhost_contract::READ_ONLY_HEADER;
use webhost_domain::TenantId;
use webhost_http::auth::{Caller, InternalAuth};
use webhost_http::ApiError;
use webhost_storage::{CellStore, StorageResult};

use crate::CellState;

#[derive(Clone)]
pub(crate) struct Fence {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn CellStore>,
    loaded: OnceCell<()>,
    read_only: RwLock<HashSet<TenantId>>,
    /// Shared by writes in flight, taken exclusively to drain them.
    gate: AsyncRwLock<()>,
}

/// Held by a write from its fence check until its commit.
pub(crate) struct WritePermit<'a> {
    _shared: RwLockReadGuard<'a, ()>,
}

impl Fence {
    pub fn new(store: Arc<dyn CellStore>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                loaded: OnceCell::new(),
                read_only: RwLock::new(HashSet::new()),
                gate: AsyncRwLock::new(()),
            }),
        }
    }

    async fn load(&self) -> StorageResult<()> {
        self.inner
            .loaded
            .get_or_try_init(|| async {
                let tenants = self.inner.store.read_only_tenants().await?;
                self.inner
                    .read_only
                    .write()
                    .expect("fence lock")
                    .extend(tenants);
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Whether the tenant's writes are refused here.
    pub async fn is_read_only(&self, tenant: TenantId) -> StorageResult<bool> {
        self.load().await?;
        Ok(self.contains(tenant))
    }

    fn contains(&self, tenant: TenantId) -> bool {
        self.inner
            .read_only
            .read()
            .expect("fence lock")
            .contains(&tenant)
    }

    /// The tenants fenced now (the sweep skips them).
    pub async fn fenced(&self) -> StorageResult<HashSet<TenantId>> {
        self.load().await?;
        Ok(self.inner.read_only.read().expect("fence lock").clone())
    }

    /// A write's permit: hold it until the write has committed, then check
    /// the tenants it writes for with [`Fence::is_read_only`].
    pub async fn permit(&self) -> StorageResult<WritePermit<'_>> {
        self.load().await?;
        Ok(WritePermit {
            _shared: self.inner.gate.read().await,
        })
    }

    /// Raises or lowers the tenant's fence (persisted first). Raising it
    /// returns once every write that passed the check before is committed.
    pub async fn set(&self, tenant: TenantId, read_only: bool) -> StorageResult<()> {
        self.load().await?;
        self.inner.store.set_read_only(tenant, read_only).await?;
        {
            let mut set = self.inner.read_only.write().expect("fence lock");
            if read_only {
                set.insert(tenant);
            } else {
                set.remove(&tenant);
            }
        }
        if read_only {
            // Writes check under a shared permit: taking it exclusively
            // waits for every one that may have checked before the flag.
            drop(self.inner.gate.write().await);
        }
        Ok(())
    }

    /// Forgets a tenant deleted from this cell.
    pub fn forget(&self, tenant: TenantId) {
        self.inner
            .read_only
            .write()
            .expect("fence lock")
            .remove(&tenant);
    }
}

/// The answer to a fenced tenant's API write.
pub(crate) fn refused() -> Response {
    let mut response = ApiError {
        retry_after_secs: Some(1),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "tenant_moving",
            "the account is being moved to another server; writes resume within seconds — \
             try again",
        )
    }
    .into_response();
    response
        .headers_mut()
        .insert(READ_ONLY_HEADER, HeaderValue::from_static("1"));
    response
}

/// Middleware on the tenant API: a write (any method but GET, HEAD and
/// OPTIONS; a GraphQL POST counts, queries included — the edge holds those
/// during a freeze anyway) of a fenced tenant is refused before any
/// handler runs; others run holding a [`WritePermit`] until they answer,
/// i.e. until their commit.
pub(crate) async fn guard_writes(
    State(state): State<CellState>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || !request.uri().path().starts_with("/api/")
    {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    // Unauthenticated or non-tenant requests go on to be refused by their
    // handler's extractor, with its words.
    let tenant =
        match <Caller as axum::extract::FromRequestParts<InternalAuth>>::from_request_parts(
            &mut parts,
            &state.auth,
        )
        .await
        {
            Ok(Caller {
                tenant: Some(tenant),
                ..
            }) => tenant,
            _ => return next.run(Request::from_parts(parts, body)).await,
        };
    let permit = match state.fence.permit().await {
        Ok(permit) => permit,
        Err(err) => return ApiError::from(err).into_response(),
    };
    if state.fence.contains(tenant) {
        return refused();
    }
    let response = next.run(Request::from_parts(parts, body)).await;
    drop(permit);
    response
}
