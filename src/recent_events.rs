//! recent_events(): a user's newest events from the configured events table, for the
//! dashboard's user page and for support staff. The same sources and data rules as the
//! features: the configured (or default) tables, checked once per backend, and events in
//! the future or at an infinite time are never read.

use pgrx::prelude::*;

use crate::error::{self, Result, SpiContext};
use crate::plans::types::{INT4, INT8};
use crate::{feature_store, plans, source};

const MAX_EVENTS: i32 = 1000;

// pgrx reads the column names from the signature, so the type stays spelled out
#[allow(clippy::type_complexity)]
#[pg_extern(stable, security_definer, parallel_restricted)]
#[search_path(pg_catalog, pg_temp)]
fn recent_events(
    user_id: Option<i64>,
    n: default!(Option<i32>, 20),
) -> Result<
    TableIterator<
        'static,
        (
            name!(created_at, TimestampWithTimeZone),
            name!(event_type, Option<String>),
            name!(event_data, Option<String>),
        ),
    >,
> {
    let user_id = user_id.ok_or_else(|| error::null_argument("user_id"))?;
    let n = n.ok_or_else(|| error::null_argument("n"))?;
    if !(1..=MAX_EVENTS).contains(&n) {
        return Err(error::invalid_parameter(
            format!("n must be between 1 and {MAX_EVENTS}, not {n}"),
            "Ask for at most 1,000 events; older ones are in the events table.",
        ));
    }
    Spi::connect(|client| {
        let client = &client;
        let s = source::load(client)?;
        if !feature_store::user_exists(client, &s, user_id)? {
            return Err(error::unknown_user(user_id, &s.users));
        }
        let rows = plans::select(
            client,
            &format!(
                "SELECT e.created_at::timestamptz, e.event_type::text, e.event_data::text
                 FROM {} e
                 WHERE e.user_id = $1 AND e.created_at::timestamptz <= now()
                   AND e.created_at::timestamptz > '-infinity'
                 ORDER BY e.created_at DESC
                 LIMIT $2",
                s.events
            ),
            &[INT8, INT4],
            &[user_id.into(), n.into()],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let at: Option<TimestampWithTimeZone> = row.get(1).ctx("reading an event")?;
            let Some(at) = at else { continue };
            out.push((
                at,
                row.get(2).ctx("reading an event")?,
                row.get(3).ctx("reading an event")?,
            ));
        }
        Ok(TableIterator::new(out))
    })
}
