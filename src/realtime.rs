//! The real-time path's trigger: statement-level triggers on the shop's events table
//! that only queue the users whose events changed (`customer_analyzer.rescore_queue`);
//! the rescoring worker (`worker.rs`) does the rest outside the shop's transaction.
//!
//! The triggers are not members of the extension (they live on the shop's table), so
//! each is marked `DEPENDS ON EXTENSION`: `DROP EXTENSION` drops them with it.

use pgrx::pg_sys;
use pgrx::spi::SpiClient;

use crate::error::{Result, SpiContext};

/// The statements the triggers fire on, each with the transition tables it may have
/// (PostgreSQL allows transition tables only on single-event triggers).
const TRIGGERS: [(&str, &str, &str); 3] = [
    (
        "customer_analyzer_rescore_insert",
        "INSERT",
        "NEW TABLE AS customer_analyzer_new",
    ),
    (
        "customer_analyzer_rescore_update",
        "UPDATE",
        "OLD TABLE AS customer_analyzer_old NEW TABLE AS customer_analyzer_new",
    ),
    (
        "customer_analyzer_rescore_delete",
        "DELETE",
        "OLD TABLE AS customer_analyzer_old",
    ),
];

/// Where the triggers stand after [`attach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Realtime {
    /// Installed on this table.
    On(String),
    /// Not installed, and why.
    Off(String),
}

/// Drops the real-time triggers from whichever tables carry them (only from `table`,
/// a relation oid, and its partitions, when given); returns whether there were any.
pub fn detach(client: &mut SpiClient<'_>, table: Option<pg_sys::Oid>) -> Result<bool> {
    let names: Vec<String> = TRIGGERS.iter().map(|(n, _, _)| n.to_string()).collect();
    let rows = client
        .select(
            "SELECT format('DROP TRIGGER %I ON %s', t.tgname, t.tgrelid::regclass)
             FROM pg_catalog.pg_trigger t
             JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
             JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'customer_analyzer' AND p.proname = '_enqueue_changed_users'
               AND t.tgname = ANY($1)
               AND ($2::oid IS NULL OR t.tgrelid = $2::oid
                    OR t.tgrelid IN (SELECT relid FROM pg_catalog.pg_partition_tree($2::oid)))",
            None,
            &[names.into(), table.into()],
        )
        .ctx("finding the real-time triggers")?;
    let drops: Vec<String> = rows
        .map(|r| r.get::<String>(1).ctx("finding the real-time triggers"))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    let any = !drops.is_empty();
    for drop in drops {
        client
            .update(&drop, None, &[])
            .ctx("dropping a real-time trigger")?;
    }
    Ok(any)
}

/// Moves the real-time triggers to `events` (a relation oid): off every other table,
/// onto this one when it is a base table the caller owns (as triggers need). A view or a
/// missing privilege leaves real time off and says why. A partitioned table gets them on
/// every partition too: a statement fires only the triggers of the table it names, so
/// rows inserted straight into a partition are queued only by the partition's own
/// (partitions made later get them from the next `configure()`).
pub fn attach(client: &mut SpiClient<'_>, events: pg_sys::Oid) -> Result<Realtime> {
    detach(client, None)?;
    // the table and every partition below it (pg_partition_tree has no rows for a plain
    // table): whether the caller owns them all, and whether any is foreign
    let row = client
        .select(
            "SELECT c.relkind::text, format('%I.%I', n.nspname, c.relname),
                    (SELECT bool_and(pg_catalog.pg_has_role(p.relowner, 'USAGE'))
                     FROM pg_catalog.pg_class p
                     WHERE p.oid = c.oid OR p.oid IN (SELECT relid FROM pg_catalog.pg_partition_tree(c.oid))),
                    (SELECT count(*) FROM pg_catalog.pg_partition_tree(c.oid) t
                     JOIN pg_catalog.pg_class p ON p.oid = t.relid WHERE p.relkind = 'f')
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = $1",
            Some(1),
            &[events.into()],
        )
        .ctx("reading the events table")?
        .first();
    let kind = row.get::<String>(1).ctx("reading the events table")?;
    let name = row
        .get::<String>(2)
        .ctx("reading the events table")?
        .unwrap_or_default();
    let may = row.get::<bool>(3).ctx("reading the events table")?;
    let foreign = row
        .get::<i64>(4)
        .ctx("reading the events table")?
        .unwrap_or(0);
    let off = |why: String| -> Result<Realtime> {
        pgrx::notice!("customer_analyzer: real time is off: {why}");
        Ok(Realtime::Off(why))
    };
    match (kind.as_deref(), may) {
        (Some("r" | "p"), Some(true)) => {}
        (Some("r" | "p"), _) => {
            return off(format!(
                "only the owner of {name} and of its partitions may put triggers on them; run configure() as their owner to turn real time on"
            ))
        }
        _ => {
            return off(format!(
                "{name} is not a base table (a view?); real time needs the events' base table to put its trigger on"
            ))
        }
    }
    if foreign > 0 {
        // with transition tables on the parent, PostgreSQL refuses every write routed to
        // a foreign partition: the shop's own inserts would fail
        return off(format!(
            "{name} has {foreign} foreign partition(s), and statement triggers with transition tables would make PostgreSQL refuse writes routed to them"
        ));
    }
    // the table itself first, then its partitions at every level
    let tables: Vec<String> = client
        .select(
            "SELECT format('%I.%I', n.nspname, c.relname)
             FROM (SELECT $1::regclass AS relid, 0 AS level
                   UNION SELECT relid, level FROM pg_catalog.pg_partition_tree($1)) t
             JOIN pg_catalog.pg_class c ON c.oid = t.relid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p')
             ORDER BY t.level, c.oid",
            None,
            &[events.into()],
        )
        .ctx("reading the events table's partitions")?
        .map(|r| {
            r.get::<String>(1)
                .ctx("reading the events table's partitions")
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    for table in &tables {
        for (trigger, event, transition) in TRIGGERS {
            client
                .update(
                    &format!(
                        "CREATE TRIGGER {trigger} AFTER {event} ON {table}
                         REFERENCING {transition}
                         FOR EACH STATEMENT EXECUTE FUNCTION customer_analyzer._enqueue_changed_users()"
                    ),
                    None,
                    &[],
                )
                .ctx("creating a real-time trigger")?;
            client
                .update(
                    &format!(
                        "ALTER TRIGGER {trigger} ON {table} DEPENDS ON EXTENSION customer_analyzer"
                    ),
                    None,
                    &[],
                )
                .ctx("tying a real-time trigger to the extension")?;
        }
    }
    Ok(Realtime::On(name))
}

/// The real-time triggers' oids on `events` (a relation name) and every partition of it,
/// comma-separated, when each relation has all three and they fire in ordinary sessions
/// (enabled, not for replicas only); empty when any is missing, so that some change may
/// not have been queued. A trigger made again gets a new oid, which tells the
/// incremental refresh that changes may have gone unqueued in between. (A trigger
/// disabled and enabled again, or a session with `session_replication_role = replica`,
/// writes without firing it and leaves no trace here: the README says to refresh once
/// with `incremental_refresh` off after such a load.)
pub fn covering_triggers(client: &SpiClient<'_>, events: &str) -> Result<String> {
    let names: Vec<String> = TRIGGERS.iter().map(|(n, _, _)| n.to_string()).collect();
    let row = client
        .select(
            "WITH rel AS (SELECT $1::regclass AS relid
                          UNION SELECT relid FROM pg_catalog.pg_partition_tree($1::regclass)),
                  t AS (SELECT t.oid, t.tgrelid FROM pg_catalog.pg_trigger t
                        JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
                        JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                        WHERE t.tgrelid IN (SELECT relid FROM rel) AND t.tgname = ANY($2)
                          AND t.tgenabled IN ('O', 'A') AND n.nspname = 'customer_analyzer'
                          AND p.proname = '_enqueue_changed_users')
             SELECT CASE WHEN (SELECT count(*) FROM t) = $3 * (SELECT count(*) FROM rel)
                         THEN (SELECT string_agg(t.oid::text, ',' ORDER BY t.oid) FROM t)
                         ELSE '' END",
            None,
            &[events.into(), names.into(), (TRIGGERS.len() as i64).into()],
        )
        .ctx("finding the real-time triggers")?
        .first()
        .get_one::<String>()
        .ctx("finding the real-time triggers")?;
    Ok(row.unwrap_or_default())
}
