//! Live stream: `GET /api/v1/socket` pushes `{"positions": [...]}` and
//! `{"events": [...]}` for the tenant as they are stored.
//!
//! Each tenant has a bounded broadcast channel; the ingest writer publishes
//! after each commit without ever waiting. A client that falls more than
//! `BUFFER` messages behind, or does not take a message within
//! `SEND_TIMEOUT`, is disconnected (close code 1008) rather than slowing
//! anyone down; one that stops answering pings is dropped too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio::sync::broadcast;
use webhost_domain::TenantId;
use webhost_http::auth::TenantCaller;

use crate::CellState;

/// Messages a subscriber may fall behind before it is dropped.
const BUFFER: usize = 1_024;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const PING_EVERY: Duration = Duration::from_secs(20);
/// Pings a client may leave unanswered.
const MISSED_PONGS: u32 = 2;
/// Clients only send pongs and close frames; anything big is abuse.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Per-tenant fan-out of serialized messages.
#[derive(Clone, Default)]
pub struct Bus {
    tenants: Arc<Mutex<HashMap<TenantId, broadcast::Sender<Utf8Bytes>>>>,
}

impl Bus {
    pub fn subscribe(&self, tenant: TenantId) -> broadcast::Receiver<Utf8Bytes> {
        let mut tenants = self.tenants.lock().expect("bus lock");
        tenants
            .entry(tenant)
            .or_insert_with(|| broadcast::channel(BUFFER).0)
            .subscribe()
    }

    /// Never waits: with no subscriber the message is simply dropped.
    pub fn publish(&self, tenant: TenantId, message: Utf8Bytes) {
        let mut tenants = self.tenants.lock().expect("bus lock");
        if let Some(sender) = tenants.get(&tenant) {
            if sender.send(message).is_err() {
                // Nobody listens any more.
                tenants.remove(&tenant);
            }
        }
    }

    /// Ends the tenant's live streams: each socket is closed with 1012
    /// (service restart), so its client reconnects — through the edge, to
    /// wherever the tenant lives now (after a move).
    pub fn close_tenant(&self, tenant: TenantId) {
        // Dropping the sender closes every receiver.
        self.tenants.lock().expect("bus lock").remove(&tenant);
    }

    pub fn has_subscribers(&self, tenant: TenantId) -> bool {
        let tenants = self.tenants.lock().expect("bus lock");
        tenants.get(&tenant).is_some_and(|s| s.receiver_count() > 0)
    }
}

pub(crate) fn routes() -> Router<CellState> {
    Router::new().route("/api/v1/socket", get(socket))
}

async fn socket(
    caller: TenantCaller,
    State(state): State<CellState>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let receiver = state.bus.subscribe(caller.tenant);
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, receiver))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

async fn serve(mut socket: WebSocket, mut receiver: broadcast::Receiver<Utf8Bytes>) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    let mut unanswered = 0u32;
    loop {
        tokio::select! {
            message = receiver.recv() => match message {
                Ok(text) => {
                    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return,
                        Err(_) => {
                            close(&mut socket, 1008, "too slow: messages were not read in time").await;
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    close(&mut socket, 1008, "too slow: fell behind the live stream").await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // `close_tenant`: the account moved to another cell.
                    close(&mut socket, 1012, "the account moved: reconnect").await;
                    return;
                }
            },
            _ = ping.tick() => {
                if unanswered >= MISSED_PONGS {
                    close(&mut socket, 1001, "no pong received").await;
                    return;
                }
                unanswered += 1;
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Pong(_))) => unanswered = 0,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                // Pings are answered by the library; text is not a command yet.
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_never_waits_and_a_slow_subscriber_lags() {
        let bus = Bus::default();
        let tenant = TenantId::new();
        let other = TenantId::new();
        // Nobody listens: dropped, not queued.
        bus.publish(tenant, Utf8Bytes::from_static("lost"));
        let mut slow = bus.subscribe(tenant);
        let mut bystander = bus.subscribe(other);
        for i in 0..BUFFER + 10 {
            bus.publish(tenant, Utf8Bytes::from(format!("{i}")));
        }
        assert!(matches!(
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
        assert!(matches!(
            bystander.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        drop(slow);
        assert!(!bus.has_subscribers(tenant));
        bus.publish(tenant, Utf8Bytes::from_static("after"));
        assert!(bus.has_subscribers(other));
    }
}
