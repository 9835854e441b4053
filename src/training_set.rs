//! The labelled rows of every training snapshot from one read of the shop: each user's
//! events come once, as arrays (`features_sql::history_query`), and the core computes
//! every snapshot's features and label from them (`customer_analyzer_core::snapshots`).
//! Training used to call `user_features()` once per snapshot, a full pass over the
//! events each time.

use customer_analyzer_core::events::{amount_from_text, product_id_from_text, Event, EventKind};
use customer_analyzer_core::features::UserRecord;
use customer_analyzer_core::frame::Frame;
use customer_analyzer_core::model::{self, TrainingData};
use customer_analyzer_core::snapshots::{rows_of_all, History, Row};
use customer_analyzer_core::task::Task;
use customer_analyzer_core::work::Work;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::sync::Arc;

use crate::cursor::{fetch_each_in_place, InPlace};
use crate::error::{self, Result, SpiContext};
use crate::features_sql::{history_query, Scope};
use crate::products;
use crate::source::Sources;
use crate::time::{from_unix_micros, to_unix_micros};

/// Users fetched from the cursor at a time.
const FETCH_USERS: i64 = 2000;

/// The stacked snapshots, and how many users they were sampled down to.
pub struct Gathered {
    pub data: TrainingData,
    /// The sample keeps 1 / 2^halvings of the users (0: everyone).
    pub halvings: u32,
    /// Users whose history was read, and how many of them the final sample kept.
    pub users_read: usize,
    pub users_kept: usize,
}

pub(crate) const READING: &str = "reading the event histories";

/// One row of the history query as the core's history. The event arrays are read in
/// place and each element converted as it is met, so no copy of them is made.
pub(crate) fn history(row: &InPlace) -> Result<History> {
    let user_id = row
        .get::<i64>(1, READING)?
        .ok_or_else(|| error::internal(READING, "NULL user_id"))?;
    let registered_at = row
        .get::<TimestampWithTimeZone>(2, READING)?
        .ok_or_else(|| error::internal(READING, "NULL registered_at"))?;
    let user = UserRecord {
        user_id,
        registered_at: to_unix_micros(registered_at),
        status: row.get::<String>(3, READING)?,
        has_username: row.get::<i64>(4, READING)?.map(|v| v != 0),
    };
    let (Some(at), Some(kind), Some(amount), Some(product), Some(command)) = (
        row.array::<TimestampWithTimeZone>(5, READING)?,
        row.array::<i16>(6, READING)?,
        row.array::<&str>(7, READING)?,
        row.array::<&str>(8, READING)?,
        row.array::<&str>(9, READING)?,
    ) else {
        // no events: the arrays are all NULL
        return Ok(History {
            user,
            events: Vec::new(),
        });
    };
    let n = at.len();
    if [kind.len(), amount.len(), product.len(), command.len()] != [n; 4] {
        return Err(error::internal(
            READING,
            "event arrays of different lengths",
        ));
    }
    let events = at
        .iter()
        .zip(kind.iter())
        .zip(amount.iter())
        .zip(product.iter())
        .zip(command.iter())
        .filter_map(|((((at, kind), amount), product_id), command)| {
            Some(Event {
                at: to_unix_micros(at?),
                kind: EventKind::from_code(kind.unwrap_or(0)),
                amount: amount.and_then(amount_from_text),
                product_id: product_id.and_then(product_id_from_text),
                command: command.map(str::to_owned),
            })
        })
        .collect();
    Ok(History { user, events })
}

/// What to read: the task's rows at each of `times` (row `snapshot` values index
/// `times`), with label windows that end by `end`.
pub struct Snapshots<'a> {
    pub task: Task,
    pub times: &'a [i64],
    pub end: i64,
}

/// Reads every user's history once, in batches, and hands `sink` the labelled rows of
/// every snapshot for the users `keep` accepts at the time their batch is read. The pool
/// computes one batch's rows while this (the backend) thread reads the next.
pub fn read_rows(
    client: &mut SpiClient<'_>,
    work: &Work,
    s: &Sources,
    want: &Snapshots<'_>,
    keep: &dyn Fn(i64) -> bool,
    sink: &mut dyn FnMut(Vec<Row>) -> Result<()>,
) -> Result<()> {
    let Snapshots { task, times, end } = *want;
    let products = products::table(client, s)?;
    let times: Arc<[i64]> = times.into();
    let newest = times.iter().copied().max().unwrap_or(end);
    let as_time = |t: i64| from_unix_micros(t).ok_or_else(|| error::internal("snapshot time", t));
    let sql = history_query(s, Scope::AllUsers, false);
    let mut cursor = client
        .try_open_cursor(
            sql.as_str(),
            &[as_time(newest)?.into(), as_time(end)?.into()],
        )
        .ctx("reading the event histories")?;
    crate::work::pipeline(
        client,
        work,
        |_| {
            let mut histories = Vec::new();
            let fetched = fetch_each_in_place(&mut cursor, FETCH_USERS, READING, |row| {
                let h = history(row)?;
                if keep(h.user.user_id) {
                    histories.push(h);
                }
                Ok(())
            })?;
            Ok((fetched > 0).then_some(histories))
        },
        move |histories: Vec<History>| rows_of_all(task, &times, &histories, (*products).as_ref()),
        |_, rows| sink(rows),
    )
}

/// The training set: [`read_rows`] stacked into the core's training data.
/// When the rows would not fit the memory budget, users are sampled by a fixed hash,
/// halving the share until they fit; the same users are kept in every snapshot.
pub fn gather(
    client: &mut SpiClient<'_>,
    work: &Work,
    s: &Sources,
    want: &Snapshots<'_>,
) -> Result<Gathered> {
    let mut data = TrainingData {
        frame: Frame::for_catalog(),
        ..TrainingData::default()
    };
    let per_row = model::bytes_per_training_row(
        data.frame.numeric_names.len(),
        data.frame.categorical_names.len(),
    );
    let max_rows = (work.memory_limit / per_row).max(1);
    let halvings = std::cell::Cell::new(0u32);
    let users_read = std::cell::Cell::new(0usize);
    read_rows(
        client,
        work,
        s,
        want,
        &|u| {
            users_read.set(users_read.get() + 1);
            model::user_in_sample(u, halvings.get())
        },
        &mut |rows| {
            // a batch read before the last halving may hold users the sample has dropped
            let rows: Vec<Row> = rows
                .into_iter()
                .filter(|r| model::user_in_sample(r.features.user_id, halvings.get()))
                .collect();
            data.frame
                .try_reserve_rows(rows.len())
                .map_err(error::from_core)?;
            for row in rows {
                data.frame.push_catalog_row(&row.features.values);
                data.user_id.push(row.features.user_id);
                data.y.push(if row.label { 1.0 } else { 0.0 });
                data.snapshot.push(row.snapshot);
            }
            while data.y.len() > max_rows && halvings.get() < 20 {
                halvings.set(halvings.get() + 1);
                data.retain_users(|u| model::user_in_sample(u, halvings.get()));
            }
            Ok(())
        },
    )?;
    let mut kept = data.user_id.clone();
    kept.sort_unstable();
    kept.dedup();
    Ok(Gathered {
        users_kept: kept.len(),
        data,
        halvings: halvings.get(),
        users_read: users_read.get(),
    })
}
