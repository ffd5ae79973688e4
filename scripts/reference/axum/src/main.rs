//! The axum + tokio reference: axum's own chat example (examples/chat: one
//! `tokio::sync::broadcast` channel, a send task and a receive task per socket, default
//! WebSocket settings), made wire-compatible with ../server.js: /ws broadcasts every
//! message to every client as it came (no usernames), a ping goes out every 30 s, and
//! messages are capped at 64 KiB.
//!
//! Two changes from the example besides those: the channel holds 1,024 messages instead of
//! 100, and a receiver that lagged behind skips what it missed and carries on (the
//! example's loop ends the connection on `Lagged`) — both so a saturated fan-out measures
//! delivery, not disconnections.
//!
//! Usage: axum-chat-reference [PORT]   (0 = any free port). Prints "ws listening on ws://ADDR".

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;

#[derive(Clone)]
struct AppState {
    tx: broadcast::Sender<Message>,
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let (tx, _rx) = broadcast::channel(1024);
    let app = Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route("/ws", get(websocket_handler))
        .with_state(AppState { tx });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    println!("ws listening on ws://{}", listener.local_addr().expect("local address"));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("serve");
}

async fn websocket_handler(ws: WebSocketUpgrade, State(state): State<AppState>) -> impl IntoResponse {
    ws.max_message_size(64 * 1024).on_upgrade(|socket| websocket(socket, state))
}

async fn websocket(stream: WebSocket, state: AppState) {
    let (mut sender, mut receiver) = stream.split();
    let mut rx = state.tx.subscribe();

    let mut send_task = tokio::spawn(async move {
        let mut ping = tokio::time::interval(Duration::from_secs(30));
        ping.tick().await;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok(msg) => if sender.send(msg).await.is_err() { break },
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = ping.tick() => if sender.send(Message::Ping(Default::default())).await.is_err() { break },
            }
        }
    });

    let tx = state.tx.clone();
    let mut recv_task = tokio::spawn(async move {
        while let Some(Ok(msg)) = receiver.next().await {
            match msg {
                Message::Text(_) | Message::Binary(_) => {
                    let _ = tx.send(msg);
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    });

    tokio::select! {
        _ = &mut send_task => recv_task.abort(),
        _ = &mut recv_task => send_task.abort(),
    }
}
