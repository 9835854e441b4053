//! Per-backend cache of prepared statements for the hot paths (one-user refresh,
//! predictions). Keyed by SQL text, which names the configured tables; PostgreSQL's
//! plan cache revalidates a kept plan when a table it reads changes.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::datum::DatumWithOid;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiCursor, SpiTupleTable};
use pgrx::PgOid;

use crate::error::{self, Result, SpiContext};

const MAX_PLANS: usize = 32;

/// The parameter types the statements here are prepared with: one home for each.
pub mod types {
    use pgrx::{PgBuiltInOids, PgOid};

    pub const BOOL_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::BOOLARRAYOID);
    pub const FLOAT8_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::FLOAT8ARRAYOID);
    pub const INT4: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT4OID);
    pub const INT8: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT8OID);
    pub const INT8_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT8ARRAYOID);
    pub const TEXT: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
    pub const TEXT_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID);
    pub const TIMESTAMPTZ: PgOid = PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID);
    pub const TIMESTAMPTZ_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZARRAYOID);
}

thread_local! {
    static PLANS: RefCell<HashMap<String, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

fn ensure(client: &SpiClient<'_>, sql: &str, types: &[PgOid], mutating: bool) -> Result<()> {
    PLANS.with(|plans| {
        let mut plans = plans.borrow_mut();
        if !plans.contains_key(sql) {
            if plans.len() >= MAX_PLANS {
                plans.clear();
            }
            let plan = if mutating {
                client.prepare_mut(sql, types)
            } else {
                client.prepare(sql, types)
            }
            .ctx("preparing a statement")?
            .keep();
            plans.insert(sql.to_string(), plan);
        }
        Ok(())
    })
}

/// Runs `f` on the kept plan of `sql` (which `ensure` prepared).
fn kept<R>(sql: &str, f: impl FnOnce(&OwnedPreparedStatement) -> Result<R>) -> Result<R> {
    PLANS.with(|plans| {
        let plans = plans.borrow();
        let plan = plans
            .get(sql)
            .ok_or_else(|| error::internal("running a kept plan", "plan missing"))?;
        f(plan)
    })
}

/// Runs a read-only statement through its kept plan.
pub fn select<'conn>(
    client: &SpiClient<'conn>,
    sql: &str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
) -> Result<SpiTupleTable<'conn>> {
    ensure(client, sql, types, false)?;
    kept(sql, |plan| {
        client.select(plan, None, args).ctx("running a kept plan")
    })
}

/// Runs a writing statement through its kept plan.
pub fn update<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
) -> Result<SpiTupleTable<'conn>> {
    ensure(client, sql, types, true)?;
    kept(sql, |plan| {
        client.update(plan, None, args).ctx("running a kept plan")
    })
}

/// Opens a read-only cursor on `sql` through its kept plan.
pub fn cursor<'conn>(
    client: &SpiClient<'conn>,
    sql: &str,
    types: &[PgOid],
    args: &[DatumWithOid<'_>],
) -> Result<SpiCursor<'conn>> {
    ensure(client, sql, types, false)?;
    kept(sql, |plan| {
        client
            .try_open_cursor(plan, args)
            .ctx("opening a cursor on a kept plan")
    })
}
