//! Every error the extension raises on purpose: a SQLSTATE, a message, a detail and a
//! hint. SQL functions return `Result<T, ErrorReport>`, which pgrx raises as exactly this
//! error (a plain `Err` would become SQLSTATE 22000 whatever it meant).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

pub type Result<T> = std::result::Result<T, ErrorReport>;

fn report(code: PgSqlErrorCode, message: String, hint: &str) -> ErrorReport {
    ErrorReport::new(code, message, "customer_analyzer").set_hint(hint)
}

/// An argument outside its documented range (22023).
pub fn invalid_parameter(message: impl Into<String>, hint: &str) -> ErrorReport {
    report(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message.into(),
        hint,
    )
}

/// A NULL where a value is needed (22004).
pub fn null_argument(name: &str) -> ErrorReport {
    report(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        format!("{name} must not be NULL"),
        "Pass a value or leave the argument out to use its default.",
    )
}

/// A table that does not exist (42P01).
pub fn undefined_table(message: impl Into<String>, hint: &str) -> ErrorReport {
    report(
        PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
        message.into(),
        hint,
    )
}

/// A column that does not exist (42703).
pub fn undefined_column(message: impl Into<String>, hint: &str) -> ErrorReport {
    report(
        PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
        message.into(),
        hint,
    )
}

/// A column of an unusable type (42804).
pub fn wrong_type(message: impl Into<String>, hint: &str) -> ErrorReport {
    report(
        PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
        message.into(),
        hint,
    )
}

/// A user id that is not in the users table (P0002).
pub fn unknown_user(user_id: i64, users: &str) -> ErrorReport {
    report(
        PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
        format!("user {user_id} does not exist in {users}"),
        "Pass the id of a row of the configured users table.",
    )
}

/// The database is not in a state where the call makes sense (55000).
pub fn not_ready(message: impl Into<String>, hint: &str) -> ErrorReport {
    report(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        message.into(),
        hint,
    )
}

/// Someone else holds what the call needs, and it does not wait (55P03).
pub fn busy(message: impl Into<String>, hint: &str) -> ErrorReport {
    report(
        PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
        message.into(),
        hint,
    )
}

/// 25006 when the server is a hot standby or the transaction is read-only: `function`
/// writes. Called first, so a refused call costs nothing (not minutes of training before
/// its first INSERT fails) and leaves nothing behind.
#[allow(unsafe_code)] // reads the recovery state and this backend's transaction flag
pub fn require_primary(function: &str) -> Result<()> {
    // SAFETY: a plain read of shared state PostgreSQL offers to every backend
    if unsafe { pgrx::pg_sys::RecoveryInProgress() } {
        return Err(report(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("{function} writes, and this server is a read-only standby"),
            "Run it on the primary; its results reach the standbys by replication. Standbys answer predict_churn(), predict_purchase(), explain(), segment_of() and the views.",
        ));
    }
    // SAFETY: the backend's own transaction state, read on its own thread
    if unsafe { pgrx::pg_sys::XactReadOnly } {
        return Err(report(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("{function} writes, and this transaction is read-only"),
            "Call it in a read-write transaction (BEGIN READ WRITE, or SET default_transaction_read_only = off).",
        ));
    }
    Ok(())
}

/// A failure inside SPI that is not the caller's fault (XX000).
pub fn internal(context: &str, e: impl std::fmt::Display) -> ErrorReport {
    report(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("{context}: {e}"),
        "This is a bug in customer_analyzer; please report it with the statement that failed.",
    )
}

/// Maps the core's errors to SQLSTATEs.
pub fn from_core(e: customer_analyzer_core::Error) -> ErrorReport {
    use customer_analyzer_core::Error as E;
    match e {
        E::InvalidParameter { name, message } => invalid_parameter(
            message,
            &format!("See the documented values of {name} in the README."),
        ),
        E::NotEnoughData(message) => not_ready(
            format!("not enough data: {message}"),
            "Train on a longer history (more matured snapshots) or a larger shop; see customer_analyzer.labels() for the populations.",
        ),
        E::CorruptModel(message) => report(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("stored model is corrupt: {message}"),
            "Deploy another model (customer_analyzer.rollback() or deploy()) or train a new one.",
        ),
        E::FutureModelVersion(v) => report(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("stored model uses format {v}, newer than this extension reads"),
            "Update the extension (ALTER EXTENSION customer_analyzer UPDATE) or deploy a model trained by this version.",
        ),
        E::Internal(message) => internal("customer_analyzer core", message),
        E::Cancelled => report(
            PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
            "canceling statement: customer_analyzer work was interrupted".into(),
            "The call was canceled or hit statement_timeout; nothing was written.",
        ),
        E::TooLarge {
            what,
            needed_mb,
            limit_mb,
            setting,
        } => report(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("{what} would need about {needed_mb} MB, more than {setting} = {limit_mb} MB"),
            &format!(
                "Ask for less (fewer users, a smaller sample_size, fewer or shallower trees), or have a superuser raise {setting}."
            ),
        ),
        E::OutOfMemory(what) => report(
            PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
            format!("out of memory allocating {what}"),
            "Lower customer_analyzer.max_memory_mb so that calls are refused before the server runs short.",
        ),
    }
}

/// Lets `?` turn SPI failures into internal errors with context.
pub trait SpiContext<T> {
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> SpiContext<T> for std::result::Result<T, pgrx::spi::SpiError> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|e| internal(context, e))
    }
}
