//! Live scores: one connection LISTENs on `customer_analyzer_scores` (the rescoring
//! worker's NOTIFY) and every open page receives each payload as a Server-Sent Event.
//! The connection is re-made when it drops, so a database restart only pauses updates.
//! NOTIFY needs no privilege, so any role that can connect could send a payload on the
//! channel: a notification is only a hint, and the score the pages get is read back
//! from the prediction log.

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
    pool: deadpool_postgres::Pool,
}

/// The newest logged score of a user and task: what a notification announced.
const LOGGED_SQL: &str = "SELECT score, model_id FROM customer_analyzer.latest_predictions
     WHERE user_id = $1 AND task = $2";

impl Live {
    /// Starts listening in the background.
    pub fn start(pg: tokio_postgres::Config, pool: deadpool_postgres::Pool) -> Live {
        // a page that falls this far behind skips the oldest scores
        let (scores, _) = broadcast::channel(4096);
        let live = Live {
            scores,
            connected: Arc::new(AtomicBool::new(false)),
            pool,
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
            // no page open: nobody to tell, nothing to read
            if self.scores.receiver_count() == 0 {
                continue;
            }
            if let Some(event) = self.checked(&payload).await {
                let _ = self.scores.send(event);
            }
        }
        match driver.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

impl Live {
    /// The event the pages receive for a notification: its user and task, with the
    /// score and model read from the log; None for a payload that names no logged score.
    async fn checked(&self, payload: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(payload).ok()?;
        let user = v.get("user_id")?.as_i64()?;
        let task = v.get("task")?.as_str()?;
        let rows = crate::db::query(&self.pool, LOGGED_SQL, &[&user, &task])
            .await
            .ok()?;
        let row = rows.first()?;
        let score: f64 = row.try_get(0).ok()?;
        let model_id: i64 = row.try_get(1).ok()?;
        // only a marker for the page (which event it saw): a short string or nothing
        let event_at = v
            .get("event_at")
            .and_then(|e| e.as_str())
            .filter(|e| e.len() <= 64);
        Some(
            serde_json::json!({"user_id": user, "task": task, "score": score,
                               "model_id": model_id, "event_at": event_at})
            .to_string(),
        )
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
