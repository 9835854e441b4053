//! The connection pool and what a database error means over HTTP. Every query is
//! parameterised and prepared once per connection (`prepare_cached`).

use std::time::Duration;

use axum::http::StatusCode;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// The connection settings every connection of the service uses: its name in
/// pg_stat_activity, UTC for the timestamps it formats, and a statement timeout so
/// that no page can hold a backend (the DSN may set its own options instead).
pub fn connection_config(dsn: &str) -> Result<tokio_postgres::Config, String> {
    let mut pg: tokio_postgres::Config = dsn
        .parse()
        .map_err(|e| format!("CUSTOMER_ANALYZER_WEB_DSN does not parse: {e}"))?;
    pg.application_name("customer-analyzer-web");
    pg.connect_timeout(Duration::from_secs(5));
    // a peer that vanished without closing (failover, NAT) is noticed within a minute,
    // not after the system's two hours: the live-scores connection only ever reads
    pg.keepalives_idle(Duration::from_secs(30));
    if pg.get_options().is_none() {
        pg.options("-c statement_timeout=10s -c TimeZone=UTC");
    }
    Ok(pg)
}

pub fn pool(pg: tokio_postgres::Config, size: usize) -> Result<Pool, String> {
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| format!("building the connection pool: {e}"))
}

/// Why a request failed, with the extension's SQLSTATE when it said so.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
    pub sqlstate: Option<String>,
    pub hint: Option<String>,
}

impl Failure {
    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            sqlstate: None,
            hint: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            sqlstate: None,
            hint: None,
        }
    }

    /// What the extension would answer with 55000: nothing to show yet.
    pub fn not_ready(message: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure {
            status: StatusCode::CONFLICT,
            message: message.into(),
            sqlstate: Some("55000".into()),
            hint: Some(hint.into()),
        }
    }

    fn unavailable(message: String) -> Failure {
        Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message,
            sqlstate: None,
            hint: Some(
                "The database is not reachable; the dashboard retries on the next request.".into(),
            ),
        }
    }
}

/// The HTTP status of a SQLSTATE: the extension's meanings (README, "What each refusal
/// means") kept, so that a client can act on the status alone.
pub fn status_of(sqlstate: &str) -> StatusCode {
    match sqlstate {
        "P0002" => StatusCode::NOT_FOUND,
        "42501" => StatusCode::FORBIDDEN,
        "55000" | "55P03" => StatusCode::CONFLICT,
        s if s.starts_with("22") => StatusCode::BAD_REQUEST,
        // worth trying again: serialisation failure, deadlock, resources, shutdown; and
        // a database this service cannot log into or find is, to its clients, down
        "40001" | "40P01" | "3D000" => StatusCode::SERVICE_UNAVAILABLE,
        s if s.starts_with("08")
            || s.starts_with("28")
            || s.starts_with("53")
            || s.starts_with("54")
            || s.starts_with("57") =>
        {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        match e.as_db_error() {
            Some(db) => Failure {
                status: status_of(db.code().code()),
                message: db.message().to_owned(),
                sqlstate: Some(db.code().code().to_owned()),
                hint: db.hint().map(str::to_owned),
            },
            // no answer from the server: the connection is gone or never came
            None if e.is_closed() || connection_lost(&e) => {
                Failure::unavailable(format!("database connection failed: {e}"))
            }
            // a row this service could not read: its own bug, not the database's state
            None => Failure {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("reading the database's answer: {e}"),
                sqlstate: None,
                hint: None,
            },
        }
    }
}

/// Whether the error came from the network (refused, reset, timed out).
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    // tokio-postgres reports a connect timeout without a source
    e.to_string().contains("timeout")
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Failure {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e => Failure::unavailable(format!("no database connection: {e}")),
        }
    }
}

/// Runs one statement on a pooled connection.
pub async fn query(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, Failure> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query(&statement, params).await?)
}

/// Runs one statement that returns exactly one row.
pub async fn query_one(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, Failure> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query_one(&statement, params).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_keep_their_meaning() {
        assert_eq!(status_of("P0002"), StatusCode::NOT_FOUND);
        assert_eq!(status_of("22023"), StatusCode::BAD_REQUEST);
        assert_eq!(status_of("22004"), StatusCode::BAD_REQUEST);
        assert_eq!(status_of("42501"), StatusCode::FORBIDDEN);
        assert_eq!(status_of("55000"), StatusCode::CONFLICT);
        assert_eq!(status_of("57014"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of("57P01"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of("40P01"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of("28P01"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of("XX001"), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn the_service_names_itself_and_bounds_its_statements() {
        let pg = connection_config("host=127.0.0.1 dbname=shop user=x").expect("parses");
        assert_eq!(pg.get_application_name(), Some("customer-analyzer-web"));
        assert!(pg
            .get_options()
            .is_some_and(|o| o.contains("statement_timeout")));
        assert!(connection_config("host=127.0.0.1 port=notaport").is_err());
    }
}
