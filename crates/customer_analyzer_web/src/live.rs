//! Live scores: one connection LISTENs on `customer_analyzer_scores` (the rescoring
//! worker's NOTIFY) and every open page receives each payload as a Server-Sent Event.
//! The connection is re-made when it drops, so a database restart only pauses updates.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::Stream;

use crate::AppState;

/// The channel the rescoring worker notifies (README, "Real time").
pub const CHANNEL: &str = "customer_analyzer_scores";

#[derive(Clone)]
pub struct Live {
    scores: broadcast::Sender<String>,
    connected: Arc<AtomicBool>,
}

impl Live {
    /// Starts listening in the background.
    pub fn start(pg: tokio_postgres::Config) -> Live {
        // a page that falls this far behind skips the oldest scores
        let (scores, _) = broadcast::channel(4096);
        let live = Live {
            scores,
            connected: Arc::new(AtomicBool::new(false)),
        };
        let l = live.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = l.listen(&pg).await {
                    eprintln!(
                        "customer-analyzer-web: listening for live scores: {e}; retrying in 2 s"
                    );
                }
                l.connected.store(false, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        live
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Forwards notifications until the connection ends.
    async fn listen(&self, pg: &tokio_postgres::Config) -> Result<(), tokio_postgres::Error> {
        let (client, mut connection) = pg.connect(NoTls).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        // the connection delivers notifications only while it is polled
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        self.connected.store(true, Ordering::Relaxed);
        while let Some(payload) = rx.recv().await {
            // no page open: nobody to tell
            let _ = self.scores.send(payload);
        }
        match driver.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

/// `GET /api/events`: every score the worker sends, as `event: score`, `data: <payload>`.
pub async fn events(
    State(s): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut stopping = s.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|&stop| stop).await;
    };
    let stream = BroadcastStream::new(s.live.scores.subscribe())
        .filter_map(|m| async move {
            // a lagging page misses some scores rather than holding the others up
            m.ok()
                .map(|payload| Ok(Event::default().event("score").data(payload)))
        })
        .take_until(stopped);
    Sse::new(stream).keep_alive(KeepAlive::default())
}
