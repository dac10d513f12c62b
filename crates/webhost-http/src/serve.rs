//! Binding and serving: bind first and report the port (so tests can use
//! port 0), then serve until the shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// A server that is already listening.
pub struct Server {
    pub addr: SocketAddr,
    pub handle: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serves `router` until `shutdown` triggers, then lets in-flight requests
/// finish; the task is one of `shutdown`'s.
pub fn spawn(listener: TcpListener, router: Router, shutdown: &Shutdown) -> anyhow::Result<Server> {
    let addr = listener.local_addr()?;
    let stop = shutdown.wait();
    let handle = shutdown.spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop)
        .await
    });
    Ok(Server { addr, handle })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// Who owns the process's background work: every long-lived task (servers,
/// ingest writers, sweepers, job workers) is spawned through this, so that
/// shutdown can cancel them all and then wait until each has finished what
/// it must finish (a writer commits what it accepted; a worker finishes or
/// releases its jobs). Clones share the token and the tracker.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every task to stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Resolves once `trigger` has been called.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// The tracker tasks are spawned on.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// The token tasks watch; cancelled by `trigger`.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// A switch of its own (for one cell), also flipped by this one; its
    /// tasks are still this one's to wait for (call `finish` on the root).
    pub fn child(&self) -> Self {
        Self {
            token: self.token.child_token(),
            tracker: self.tracker.clone(),
        }
    }

    /// Spawns a task this shutdown waits for.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Triggers, then waits until every spawned task has ended.
    pub async fn finish(&self) {
        self.trigger();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
