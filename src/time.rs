//! Time conversions between PostgreSQL's timestamps (microseconds since 2000-01-01)
//! and the core's (microseconds since the Unix epoch).

use pgrx::prelude::*;

const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

pub fn to_unix_micros(t: TimestampWithTimeZone) -> i64 {
    let pg: pg_sys::TimestampTz = t.into();
    pg.saturating_add(PG_EPOCH_OFFSET_MICROS)
}

/// None for a time PostgreSQL cannot represent.
pub fn from_unix_micros(micros: i64) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(micros.checked_sub(PG_EPOCH_OFFSET_MICROS)?).ok()
}
