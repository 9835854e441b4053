//! `generate_demo_data()`: builds the demo Telegram-bot shop in `public.users`,
//! `public.events` and `public.products` from the core's deterministic generator.

use customer_analyzer_core::demo::{self, DemoSpec};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgMemoryContexts;

use crate::error::{self, Result, SpiContext};
use crate::time::{from_unix_micros, to_unix_micros};

fn spec(
    n_users: Option<i32>,
    days: Option<i32>,
    seed: Option<i64>,
    ends_at: Option<TimestampWithTimeZone>,
) -> Result<DemoSpec> {
    let n_users = n_users.ok_or_else(|| error::null_argument("n_users"))?;
    let days = days.ok_or_else(|| error::null_argument("days"))?;
    let seed = seed.ok_or_else(|| error::null_argument("seed"))?;
    let ends_at = ends_at.ok_or_else(|| error::null_argument("ends_at"))?;
    if !ends_at.is_finite() {
        return Err(error::invalid_parameter(
            "ends_at must be a finite time",
            "Leave ends_at out to end the history now.",
        ));
    }
    DemoSpec::new(n_users.into(), days.into(), seed, to_unix_micros(ends_at))
        .map_err(error::from_core)
}

/// The demo catalogue.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn demo_products(
    seed: i64,
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(name, String),
        name!(category, String),
        name!(price, f64),
    ),
> {
    TableIterator::new(
        demo::products(seed)
            .into_iter()
            .map(|p| (p.id, p.name, p.category.to_string(), p.price)),
    )
}

/// The demo users (their attributes only; no history is simulated).
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn demo_users(
    n_users: i32,
    days: i32,
    seed: i64,
    ends_at: TimestampWithTimeZone,
) -> Result<
    TableIterator<
        'static,
        (
            name!(id, i64),
            name!(telegram_id, i64),
            name!(username, Option<String>),
            name!(registered_at, TimestampWithTimeZone),
            name!(status, String),
            name!(customer_type, String),
        ),
    >,
> {
    let spec = spec(Some(n_users), Some(days), Some(seed), Some(ends_at))?;
    Ok(TableIterator::new((1..=spec.n_users).filter_map(
        move |id| {
            let u = demo::user(&spec, id);
            Some((
                u.id,
                u.telegram_id,
                u.username,
                from_unix_micros(u.registered_at)?,
                u.status.to_string(),
                u.customer_type.as_str().to_string(),
            ))
        },
    )))
}

/// The demo history, user by user, each user's events in time order.
#[pg_extern(immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn demo_events(
    n_users: i32,
    days: i32,
    seed: i64,
    ends_at: TimestampWithTimeZone,
) -> Result<
    TableIterator<
        'static,
        (
            name!(user_id, i64),
            name!(event_type, String),
            name!(created_at, TimestampWithTimeZone),
            name!(event_data, String),
        ),
    >,
> {
    let spec = spec(Some(n_users), Some(days), Some(seed), Some(ends_at))?;
    let catalogue = demo::products(seed);
    Ok(TableIterator::new((1..=spec.n_users).flat_map(move |id| {
        demo::simulate_user(&spec, id, &catalogue)
            .1
            .into_iter()
            .filter_map(|e| {
                Some((
                    e.user_id,
                    e.event_type.to_string(),
                    from_unix_micros(e.at)?,
                    e.data,
                ))
            })
    })))
}

const TABLES: [&str; 3] = ["users", "events", "products"];

/// Users simulated per insert: their events go in as one multi-row INSERT of arrays.
const USERS_PER_BATCH: i64 = 500;

/// Simulates every user and inserts their events in batches; each INSERT sees a pending
/// cancel. (Streaming them through `demo_events()` costs a function call with its pinned
/// search_path per row, which more than doubled the time.) Each batch's arguments are
/// made in a memory context of their own, emptied after the batch: made in the SPI
/// connection's, they stayed until the function returned, and a 1,000,000-user shop
/// (83 million events) grew the backend to 22 GB.
#[allow(unsafe_code)] // switching to and resetting a memory context this function owns
fn insert_events(client: &mut SpiClient<'_>, spec: &DemoSpec) -> Result<()> {
    let catalogue = demo::products(spec.seed);
    let mut batch_memory = PgMemoryContexts::new("customer_analyzer demo batch");
    for first in (1..=spec.n_users).step_by(USERS_PER_BATCH as usize) {
        let (mut ids, mut kinds, mut times, mut data) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for id in first..(first + USERS_PER_BATCH).min(spec.n_users + 1) {
            for e in demo::simulate_user(spec, id, &catalogue).1 {
                let Some(at) = from_unix_micros(e.at) else {
                    continue;
                };
                ids.push(e.user_id);
                kinds.push(e.event_type);
                times.push(at);
                data.push(e.data);
            }
        }
        // SAFETY: the arrays are made in batch_memory and used only by this INSERT, which
        // returns no rows; nothing made there is kept past the reset
        let inserted = unsafe {
            batch_memory.switch_to(|_| {
                client.update(
                    "INSERT INTO public.events (user_id, event_type, created_at, event_data)
                     SELECT u, k, t, d::jsonb FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[]) AS x(u, k, t, d)",
                    None,
                    &[ids.into(), kinds.into(), times.into(), data.into()],
                )
            })
        };
        inserted.ctx("inserting demo events")?;
        // SAFETY: see above
        unsafe { batch_memory.reset() };
    }
    Ok(())
}

fn row_count(client: &SpiClient<'_>, table: &str) -> Result<i64> {
    Ok(client
        .select(
            &format!("SELECT count(*) FROM (SELECT 1 FROM public.{table} LIMIT 1) t"),
            None,
            &[],
        )
        .ctx("counting demo rows")?
        .first()
        .get_one::<i64>()
        .ctx("counting demo rows")?
        .unwrap_or(0))
}

/// Creates (when missing) and fills the demo shop's tables; all or nothing.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn generate_demo_data(
    n_users: default!(Option<i32>, 10000),
    days: default!(Option<i32>, 240),
    seed: default!(Option<i64>, 42),
    ends_at: default!(Option<TimestampWithTimeZone>, "now()"),
    replace: default!(Option<bool>, false),
) -> Result<
    TableIterator<
        'static,
        (
            name!(users, i64),
            name!(events, i64),
            name!(products, i64),
            name!(history_from, TimestampWithTimeZone),
            name!(history_to, TimestampWithTimeZone),
        ),
    >,
> {
    error::require_primary("generate_demo_data()")?;
    let spec = spec(n_users, days, seed, ends_at)?;
    let replace = replace.ok_or_else(|| error::null_argument("replace"))?;
    let ends_at = ends_at.ok_or_else(|| error::null_argument("ends_at"))?;
    Spi::connect_mut(|client| {
        let future = client
            .select("SELECT $1 > clock_timestamp()", None, &[ends_at.into()])
            .ctx("checking ends_at")?
            .first()
            .get_one::<bool>()
            .ctx("checking ends_at")?
            .unwrap_or(false);
        if future {
            return Err(error::invalid_parameter(
                "ends_at is in the future",
                "The demo history ends at or before now; leave ends_at out to end it now.",
            ));
        }
        let mut existing = Vec::new();
        for t in TABLES {
            let exists = client
                .select(
                    "SELECT to_regclass($1) IS NOT NULL",
                    None,
                    &[format!("public.{t}").into()],
                )
                .ctx("looking for demo tables")?
                .first()
                .get_one::<bool>()
                .ctx("looking for demo tables")?
                .unwrap_or(false);
            if exists {
                existing.push(t);
            }
        }
        for t in &existing {
            let rows = row_count(client, t)?;
            if rows > 0 && !replace {
                return Err(error::not_ready(
                    format!("public.{t} already holds data"),
                    "Pass replace => true to empty public.users, public.events and public.products first, or generate into an empty database.",
                ));
            }
        }
        if replace && !existing.is_empty() {
            let list = existing
                .iter()
                .map(|t| format!("public.{t}"))
                .collect::<Vec<_>>()
                .join(", ");
            client
                .update(&format!("TRUNCATE {list} RESTART IDENTITY"), None, &[])
                .ctx("emptying demo tables")?;
        }
        // the demo's own inserts are not events to rescore: real time is put back after
        let events_oid = |client: &SpiClient<'_>| -> Result<Option<pg_sys::Oid>> {
            client
                .select("SELECT to_regclass('public.events')::oid", None, &[])
                .ctx("looking for public.events")?
                .first()
                .get_one::<pg_sys::Oid>()
                .ctx("looking for public.events")
        };
        let realtime_was_on = match events_oid(client)? {
            Some(oid) => crate::realtime::detach(client, Some(oid))?,
            None => false,
        };
        let create = |t: &str| {
            match t {
            "products" => "CREATE TABLE public.products (
                id bigint PRIMARY KEY, name text NOT NULL, category text NOT NULL, price numeric(12,2) NOT NULL)",
            "users" => "CREATE TABLE public.users (
                id bigint PRIMARY KEY, telegram_id bigint UNIQUE, username text,
                registered_at timestamptz NOT NULL, status text)",
            _ => "CREATE TABLE public.events (
                id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES public.users (id),
                event_type text NOT NULL, created_at timestamptz NOT NULL,
                event_data jsonb NOT NULL DEFAULT '{}')",
        }
        };
        for t in ["products", "users", "events"] {
            if !existing.contains(&t) {
                client
                    .update(create(t), None, &[])
                    .ctx("creating demo tables")?;
            }
        }
        let (n, d, s) = (spec.n_users as i32, spec.days as i32, spec.seed);
        let args = || [n.into(), d.into(), s.into(), ends_at.into()];
        client
            .update(
                "INSERT INTO public.products (id, name, category, price)
                 SELECT id, name, category, price FROM customer_analyzer.demo_products($1)",
                None,
                &[s.into()],
            )
            .ctx("inserting demo products")?;
        client
            .update(
                "INSERT INTO public.users (id, telegram_id, username, registered_at, status)
                 SELECT id, telegram_id, username, registered_at, status
                 FROM customer_analyzer.demo_users($1, $2, $3, $4)",
                None,
                &args(),
            )
            .ctx("inserting demo users")?;
        insert_events(client, &spec)?;
        client
            .update(
                "DO $$ BEGIN
                     IF to_regclass('public.events_user_id_created_at_idx') IS NULL THEN
                         CREATE INDEX events_user_id_created_at_idx ON public.events (user_id, created_at);
                     END IF;
                     IF to_regclass('public.events_created_at_idx') IS NULL THEN
                         CREATE INDEX events_created_at_idx ON public.events (created_at);
                     END IF;
                 END $$;
                 ANALYZE public.products; ANALYZE public.users; ANALYZE public.events;",
                None,
                &[],
            )
            .ctx("indexing demo tables")?;
        if realtime_was_on {
            if let Some(oid) = events_oid(client)? {
                crate::realtime::attach(client, oid)?;
            }
        }
        let counts = client
            .select(
                "SELECT (SELECT count(*) FROM public.users), (SELECT count(*) FROM public.events),
                        (SELECT count(*) FROM public.products)",
                None,
                &[],
            )
            .ctx("counting demo rows")?
            .first();
        let get = |i| {
            counts
                .get::<i64>(i)
                .ctx("counting demo rows")
                .map(|v| v.unwrap_or(0))
        };
        let from = from_unix_micros(
            spec.ends_at - spec.days * customer_analyzer_core::events::MICROS_PER_DAY,
        )
        .ok_or_else(|| {
            error::invalid_parameter(
                "the history would start before the year 4713 BC",
                "Use fewer days.",
            )
        })?;
        Ok(TableIterator::once((
            get(1)?,
            get(2)?,
            get(3)?,
            from,
            ends_at,
        )))
    })
}
