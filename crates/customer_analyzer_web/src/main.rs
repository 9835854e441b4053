//! customer-analyzer-web: the shop's HTTP API and dashboard over the customer_analyzer
//! extension. It holds no model and no feature logic: every figure is read through the
//! extension's SQL functions and views, with a role that has only the reader rights.
//!
//! Environment: CUSTOMER_ANALYZER_WEB_DSN (required), CUSTOMER_ANALYZER_WEB_LISTEN
//! (default 127.0.0.1:8080; port 0 picks a free one), CUSTOMER_ANALYZER_WEB_TOKEN
//! (required beyond loopback), CUSTOMER_ANALYZER_WEB_POOL (connections, default 16).
//! The first line on standard output is `listening on http://ADDRESS`.

mod api;
mod assets;
mod auth;
mod config;
mod db;
mod live;
mod pages;

use std::process::ExitCode;
use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::routing::get;
use axum::Router;

#[derive(Clone)]
pub struct AppState {
    pub pool: deadpool_postgres::Pool,
    pub live: live::Live,
    pub token: Option<Arc<str>>,
    /// Turns true at shutdown, so that open event streams end and the server can stop.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

fn router(state: AppState) -> Router {
    let security = |mut r: axum::response::Response| {
        let h = r.headers_mut();
        // scripts only from this server; ECharts sets inline styles on its elements
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        // customer data is never kept by a browser or proxy (assets set their own)
        if !h.contains_key(header::CACHE_CONTROL) {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        r
    };
    Router::new()
        .route("/", get(pages::root))
        .route("/users", get(pages::users))
        .route("/users/{user_id}", get(pages::user))
        .route("/analytics", get(pages::analytics))
        .route("/segmentation", get(pages::segmentation))
        .route("/assets/{name}", get(assets::asset))
        // browsers ask for it on every page that names none (the JSON ones): no icon
        .route(
            "/favicon.ico",
            get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
        .route("/api/predictions/{user_id}", get(api::predictions))
        .route("/api/churn", get(api::churn_list))
        .route("/api/churn/{user_id}", get(api::churn_of))
        .route("/api/purchase/{user_id}", get(api::purchase_of))
        .route("/api/segmentation", get(api::segmentation))
        .route("/api/models", get(api::models))
        .route("/api/health", get(api::health))
        .route("/api/events", get(live::events))
        .route("/api/openapi.json", get(api::openapi))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // outermost, so that refusals carry the headers too
        .layer(axum::middleware::map_response(move |r| {
            let r = security(r);
            async move { r }
        }))
        .with_state(state)
}

async fn shutdown(stopping: tokio::sync::watch::Sender<bool>) {
    signal().await;
    let _ = stopping.send(true);
}

async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let fail = |e: String| {
        eprintln!("customer-analyzer-web: {e}");
        ExitCode::from(2)
    };
    // benches/web_bench.sh runs the endpoint's own statement through pgbench
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--print-sql") {
        return match args.get(1).map(String::as_str) {
            Some("predictions") => {
                println!("{}", api::PREDICTIONS_SQL);
                ExitCode::SUCCESS
            }
            _ => fail("--print-sql takes: predictions".into()),
        };
    }
    let cfg = match config::Config::from_env() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let pg = match db::connection_config(&cfg.dsn) {
        Ok(pg) => pg,
        Err(e) => return fail(e),
    };
    let pool = match db::pool(pg.clone(), cfg.pool_size) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let live = live::Live::start(pg, pool.clone());
    let state = AppState {
        pool,
        live,
        token: cfg.token.map(Arc::from),
        stopping,
    };
    let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
        Ok(l) => l,
        Err(e) => return fail(format!("binding to {}: {e}", cfg.listen)),
    };
    match listener.local_addr() {
        Ok(a) => println!("listening on http://{a}"),
        Err(e) => return fail(format!("reading the bound address: {e}")),
    }
    if let Err(e) = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown(stop))
        .await
    {
        return fail(format!("serving: {e}"));
    }
    ExitCode::SUCCESS
}
