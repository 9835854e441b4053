//! Point-in-time features of one user from an in-memory event list.
//!
//! This is the reference definition of every catalogued feature; the extension's
//! set-based SQL computes the same numbers over the events table, and a test on random
//! shops checks that the two agree. Only events strictly before `as_of` are read.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::catalog::{index_of, Kind, FEATURES};
use crate::events::{Event, EventKind, MICROS_PER_DAY, MICROS_PER_MINUTE, SESSION_GAP_MICROS};

/// The user-table facts the features read.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub user_id: i64,
    /// Microseconds since the Unix epoch.
    pub registered_at: i64,
    /// `users.status`; None when NULL or when the column does not exist.
    pub status: Option<String>,
    /// None when the shop's users table has no username column.
    pub has_username: Option<bool>,
}

/// A product's category and current price.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub category: Option<String>,
    pub price: Option<f64>,
}

/// The products table as the features use it: for each product, its category, its
/// price when valid and its price level (price / mean valid price of its category),
/// worked out once when the table is built.
#[derive(Debug, Clone, Default)]
pub struct ProductTable {
    products: FxHashMap<i64, ProductFacts>,
    /// Category names in sorted order; products refer to them by index, so that
    /// counting categories hashes small integers, not strings.
    categories: Vec<String>,
}

/// What the features read of one product.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductFacts {
    /// Index into the table's sorted category names.
    pub category: Option<u32>,
    /// Finite and positive, else None.
    pub price: Option<f64>,
    /// price / mean price of the category.
    pub level: Option<f64>,
}

/// A price the features use: finite and positive.
fn valid_price(p: Option<f64>) -> Option<f64> {
    p.filter(|x| x.is_finite() && *x > 0.0)
}

impl ProductTable {
    pub fn new(rows: impl IntoIterator<Item = (i64, Product)>) -> ProductTable {
        // a BTreeMap, so that each category's sum adds prices in the same order every run
        let products: BTreeMap<i64, Product> = rows.into_iter().collect();
        let mut sums: FxHashMap<&str, (f64, f64)> = FxHashMap::default();
        for p in products.values() {
            if let (Some(c), Some(price)) = (&p.category, valid_price(p.price)) {
                let e = sums.entry(c.as_str()).or_insert((0.0, 0.0));
                e.0 += price;
                e.1 += 1.0;
            }
        }
        let mut categories: Vec<String> = products
            .values()
            .filter_map(|p| p.category.clone())
            .collect();
        categories.sort_unstable();
        categories.dedup();
        let facts = |p: &Product| {
            let price = valid_price(p.price);
            let mean = p.category.as_deref().and_then(|c| sums.get(c));
            ProductFacts {
                category: p.category.as_deref().map(|c| {
                    categories
                        .binary_search_by(|k| k.as_str().cmp(c))
                        .unwrap_or_default() as u32
                }),
                price,
                level: price.zip(mean).map(|(price, (s, n))| price / (s / n)),
            }
        };
        let products = products.iter().map(|(&id, p)| (id, facts(p))).collect();
        ProductTable {
            products,
            categories,
        }
    }

    /// The name of category `index` of [`ProductFacts::category`].
    /// A digest of everything the features read of the products (ids, categories,
    /// prices and levels): equal tables give equal digests in every process.
    pub fn digest(&self) -> u64 {
        use std::hash::Hasher;
        let mut ids: Vec<&i64> = self.products.keys().collect();
        ids.sort_unstable();
        let mut h = rustc_hash::FxHasher::default();
        for id in ids {
            let p = &self.products[id];
            h.write_i64(*id);
            match p.category {
                Some(c) => {
                    let name = self.category_name(c);
                    h.write_usize(name.len());
                    h.write(name.as_bytes());
                }
                None => h.write_u8(0xff),
            }
            h.write_u64(p.price.map_or(u64::MAX, f64::to_bits));
            h.write_u64(p.level.map_or(u64::MAX, f64::to_bits));
        }
        h.finish()
    }

    pub fn category_name(&self, index: u32) -> &str {
        self.categories
            .get(index as usize)
            .map_or("", String::as_str)
    }

    /// The facts of product `id`, None for an unknown or missing id.
    pub fn get(&self, id: Option<i64>) -> Option<&ProductFacts> {
        self.products.get(&id?)
    }

    /// `events` with their products' facts looked up, for [`compute_features_sorted`].
    pub fn resolve<'a>(
        table: Option<&'a ProductTable>,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Vec<Resolved<'a>> {
        events
            .into_iter()
            .map(|event| Resolved {
                event,
                product: match table {
                    Some(t) if event.kind.is_product_event() => t.get(event.product_id),
                    _ => None,
                },
            })
            .collect()
    }
}

/// An event and the facts of its product, looked up once however many snapshots read it.
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'a> {
    pub event: &'a Event,
    /// Only for product events whose product is in the table.
    pub product: Option<&'a ProductFacts>,
}

/// One feature's value.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue {
    Num(Option<f64>),
    Text(Option<String>),
}

impl FeatureValue {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FeatureValue::Num(v) => *v,
            FeatureValue::Text(_) => None,
        }
    }
    pub fn as_text(&self) -> Option<&str> {
        match self {
            FeatureValue::Text(v) => v.as_deref(),
            FeatureValue::Num(_) => None,
        }
    }
}

/// All catalogued features of one user, in catalog order.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureVector {
    pub user_id: i64,
    pub values: Vec<FeatureValue>,
}

impl FeatureVector {
    pub fn get(&self, name: &str) -> Option<&FeatureValue> {
        self.values.get(index_of(name)?)
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0).then(|| a / b)
}

fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

fn sample_std(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs)?;
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    Some((ss / (xs.len() - 1) as f64).sqrt())
}

fn days(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_DAY as f64
}

/// Counts over one time window [as_of - days, as_of).
#[derive(Default)]
struct Window {
    events: f64,
    page_views: f64,
    product_views: f64,
    carts: f64,
    purchases: f64,
    bot_commands: f64,
    spend: f64,
    amounts: Vec<f64>,
    /// Distinct UTC calendar days with an event in the window. Events come in time order,
    /// so their days never decrease and a new day is a change from the last one seen.
    /// Calendar days (not 24-hour steps back from as_of) keep a user's count unchanged
    /// while no event enters or leaves the window, which the incremental refresh needs.
    active_days: usize,
    last_day: Option<i64>,
    session_starts: f64,
}

/// Computes every feature of `user` as of `as_of` (microseconds since the Unix epoch).
/// Returns None when the user registered at or after `as_of`. `events` may be in any
/// order and may hold events at or after `as_of`; those are ignored. `products` is None
/// when the shop has no products table.
pub fn compute_features(
    as_of: i64,
    user: &UserRecord,
    events: &[Event],
    products: Option<&ProductTable>,
) -> Option<FeatureVector> {
    compute_features_timed(as_of, user, events, products).map(|(f, _)| f)
}

/// [`compute_features`], with the times of the user's activity that the time-relative
/// features are measured from (the feature store keeps them, so that the incremental
/// refresh can move a row to a later as_of without reading the user's events).
pub fn compute_features_timed(
    as_of: i64,
    user: &UserRecord,
    events: &[Event],
    products: Option<&ProductTable>,
) -> Option<(FeatureVector, ActivityTimes)> {
    if user.registered_at >= as_of {
        return None;
    }
    let mut evs: Vec<&Event> = events.iter().filter(|e| e.at < as_of).collect();
    evs.sort_by_key(|e| e.at);
    let evs = ProductTable::resolve(products, evs);
    compute_sorted(as_of, user, &evs, products)
}

/// [`compute_features`] for events already sorted by time, all before `as_of`, and
/// resolved against the products table (a prefix of one resolved history serves every
/// snapshot of a user). `products` is the table `evs` were resolved against.
pub fn compute_features_sorted(
    as_of: i64,
    user: &UserRecord,
    evs: &[Resolved<'_>],
    products: Option<&ProductTable>,
) -> Option<FeatureVector> {
    compute_sorted(as_of, user, evs, products).map(|(f, _)| f)
}

/// How a feature's value follows a later as_of while the user's events stay the same,
/// which decides what the incremental refresh reads again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Measured from as_of or read from the users table ([`TimeRelative`]): moved from
    /// the stored activity times.
    Moved,
    /// Counted over a window of at most 90 days before as_of: recomputed from the
    /// events of the last [`WINDOW_REACH_MICROS`].
    Window,
    /// Over every event: unchanged.
    AllTime,
}

/// The [`Reach::Moved`] features (their values: `TimeRelative::value`).
const MOVED: [&str; 10] = [
    "days_since_registration",
    "days_since_last_activity",
    "days_since_last_purchase",
    "days_since_first_activity",
    "days_since_first_purchase",
    "days_since_last_cart_addition",
    "monthly_spend_rate",
    "status",
    "has_username",
    "days_to_first_purchase",
];

/// The [`Reach::Window`] features.
const WINDOWED: [&str; 28] = [
    "events_last_7_days",
    "events_last_14_days",
    "events_last_30_days",
    "events_last_60_days",
    "active_days_last_7_days",
    "active_days_last_30_days",
    "page_views_last_7_days",
    "page_views_last_30_days",
    "product_views_last_30_days",
    "cart_additions_last_30_days",
    "purchases_last_7_days",
    "purchases_last_30_days",
    "purchases_last_60_days",
    "bot_commands_last_30_days",
    "activity_trend_7d_vs_14d",
    "purchase_trend_30d_vs_60d",
    "engagement_trend",
    "spend_trend_30d_vs_60d",
    "product_view_trend_7d_vs_30d",
    "active_days_trend_7d_vs_30d",
    "spend_last_7_days",
    "spend_last_30_days",
    "spend_last_60_days",
    "avg_order_value_last_60_days",
    "bot_commands_last_7_days",
    "product_views_last_7_days",
    "cart_additions_last_7_days",
    "sessions_last_30_days",
];

/// How far before as_of the [`Reach::Window`] features read: the longest window and one
/// session gap before it (whether an event starts a session depends on the one before).
pub const WINDOW_REACH_MICROS: i64 = 90 * MICROS_PER_DAY + SESSION_GAP_MICROS;

/// The reach of every catalogued feature, in catalog order.
pub fn reaches() -> &'static [Reach] {
    static REACHES: std::sync::LazyLock<Vec<Reach>> = std::sync::LazyLock::new(|| {
        FEATURES
            .iter()
            .map(|f| {
                if MOVED.contains(&f.name) {
                    Reach::Moved
                } else if WINDOWED.contains(&f.name) {
                    Reach::Window
                } else {
                    Reach::AllTime
                }
            })
            .collect()
    });
    &REACHES
}

/// A user's features at `as_of` from their features stored at an earlier time, for a
/// user none of whose events before `as_of` was added, changed or removed since then:
/// the all-time features as stored, the windowed ones from `recent` (their events from
/// `as_of - WINDOW_REACH_MICROS` on; older ones may be there too), the rest from the
/// stored activity times. Equal to [`compute_features_timed`] over the whole history
/// (a test checks it to the bit). None when the user registered at or after `as_of`.
pub fn roll_forward(
    as_of: i64,
    user: &UserRecord,
    recent: &[Event],
    stored: &FeatureVector,
    times: &ActivityTimes,
    products: Option<&ProductTable>,
) -> Option<(FeatureVector, ActivityTimes)> {
    let (window, _) = compute_features_timed(as_of, user, recent, products)?;
    let total_spent = stored
        .get("total_spent")
        .and_then(FeatureValue::as_f64)
        .unwrap_or(0.0);
    let tr = TimeRelative::new(as_of, user, times, total_spent);
    let values = FEATURES
        .iter()
        .zip(reaches())
        .zip(window.values)
        .zip(&stored.values)
        .map(|(((f, reach), window), stored)| match reach {
            Reach::Window => window,
            Reach::AllTime => stored.clone(),
            Reach::Moved => tr.value(f.name, user).unwrap_or(FeatureValue::Num(None)),
        })
        .collect();
    Some((
        FeatureVector {
            user_id: user.user_id,
            values,
        },
        ActivityTimes {
            registered: Some(user.registered_at),
            ..*times
        },
    ))
}

/// A stored row read at a later `as_of`, for a user none of whose events changed or
/// crossed a window's edge since the row's time (the incremental refresh leaves such rows
/// unwritten): the features that change with as_of alone, from the row's activity and
/// registration times, as the view user_metrics computes them in SQL. A row without a
/// registration time (written before 0.14.0) is left as it is.
pub fn carry_forward(as_of: i64, row: &mut FeatureVector, times: &ActivityTimes) {
    let Some(registered_at) = times.registered else {
        return;
    };
    let total_spent = row
        .get("total_spent")
        .and_then(FeatureValue::as_f64)
        .unwrap_or(0.0);
    // status, username and the days to the first purchase come from the users table,
    // which the refresh brings into the row: kept
    let user = UserRecord {
        user_id: row.user_id,
        registered_at,
        status: None,
        has_username: None,
    };
    let tr = TimeRelative::new(as_of, &user, times, total_spent);
    for (f, value) in FEATURES.iter().zip(row.values.iter_mut()) {
        if matches!(f.name, "status" | "has_username" | "days_to_first_purchase") {
            continue;
        }
        if let Some(moved) = tr.value(f.name, &user) {
            *value = moved;
        }
    }
}

/// When a user was first and last active, bought and added to the cart (Unix
/// microseconds, events before as_of; None without such an event), and when they
/// registered: what the time-relative features are computed from at a later as_of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActivityTimes {
    pub first_at: Option<i64>,
    pub last_at: Option<i64>,
    pub first_purchase: Option<i64>,
    pub last_purchase: Option<i64>,
    pub last_cart: Option<i64>,
    /// The users table's registration time the row was computed with.
    pub registered: Option<i64>,
}

/// The features that change with as_of alone, or with the users table, while the user's
/// events stay as they are. The incremental refresh moves stored rows to a later as_of
/// with the same formulas in SQL (src/refresh.rs); a test checks that the two agree to
/// the bit.
struct TimeRelative {
    days_registered: f64,
    since_last: Option<f64>,
    since_last_purchase: Option<f64>,
    since_first: Option<f64>,
    since_first_purchase: Option<f64>,
    since_last_cart: Option<f64>,
    monthly_spend_rate: f64,
    days_to_first_purchase: Option<f64>,
}

impl TimeRelative {
    /// The value of the [`Reach::Moved`] feature `name` (None for any other).
    fn value(&self, name: &str, user: &UserRecord) -> Option<FeatureValue> {
        use FeatureValue::{Num, Text};
        Some(match name {
            "days_since_registration" => Num(Some(self.days_registered)),
            "days_since_last_activity" => Num(self.since_last),
            "days_since_last_purchase" => Num(self.since_last_purchase),
            "days_since_first_activity" => Num(self.since_first),
            "days_since_first_purchase" => Num(self.since_first_purchase),
            "days_since_last_cart_addition" => Num(self.since_last_cart),
            "monthly_spend_rate" => Num(Some(self.monthly_spend_rate)),
            "days_to_first_purchase" => Num(self.days_to_first_purchase),
            "status" => Text(user.status.clone()),
            "has_username" => Num(user.has_username.map(|b| if b { 1.0 } else { 0.0 })),
            _ => return None,
        })
    }

    fn new(as_of: i64, user: &UserRecord, t: &ActivityTimes, total_spent: f64) -> TimeRelative {
        let since = |at: Option<i64>| at.map(|at| days(as_of - at));
        let days_registered = days(as_of - user.registered_at);
        TimeRelative {
            days_registered,
            since_last: since(t.last_at),
            since_last_purchase: since(t.last_purchase),
            since_first: since(t.first_at),
            since_first_purchase: since(t.first_purchase),
            since_last_cart: since(t.last_cart),
            monthly_spend_rate: total_spent / days_registered * 30.0,
            days_to_first_purchase: t.first_purchase.map(|at| days(at - user.registered_at)),
        }
    }
}

fn compute_sorted(
    as_of: i64,
    user: &UserRecord,
    evs: &[Resolved<'_>],
    products: Option<&ProductTable>,
) -> Option<(FeatureVector, ActivityTimes)> {
    if user.registered_at >= as_of {
        return None;
    }
    debug_assert!(evs.windows(2).all(|w| w[0].event.at <= w[1].event.at));
    debug_assert!(evs.last().is_none_or(|e| e.event.at < as_of));

    const WINDOWS: [i64; 5] = [7, 14, 30, 60, 90];
    let mut win: [Window; 5] = Default::default();
    let mut prior_60 = 0.0; // events in [T-90d, T-30d)
    let mut all = Window::default();

    let mut first_at = None;
    let mut last_at = None;
    let mut first_purchase = None;
    let mut last_purchase = None;
    let mut last_cart = None;
    let mut session_minutes = 0.0;
    let mut prev_at: Option<i64> = None;
    let mut purchase_gaps = Vec::new();
    let mut commands = FxHashSet::default();
    let mut viewed_products = FxHashSet::default();
    let mut bought_products = FxHashSet::default();
    let mut viewed_categories = FxHashSet::default();
    let mut bought_categories = FxHashSet::default();
    let mut category_counts: FxHashMap<u32, u64> = FxHashMap::default();
    let mut viewed_prices = Vec::new();
    let mut levels = Vec::new();
    let mut bought_levels = Vec::new();

    for &Resolved { event: e, product } in evs {
        let age = as_of - e.at;
        let day = e.at.div_euclid(MICROS_PER_DAY);
        let session_start = match prev_at {
            Some(p) if e.at - p <= SESSION_GAP_MICROS => {
                session_minutes += (e.at - p) as f64 / MICROS_PER_MINUTE as f64;
                false
            }
            _ => true,
        };
        prev_at = Some(e.at);
        first_at.get_or_insert(e.at);
        last_at = Some(e.at);

        let tally = |w: &mut Window| {
            w.events += 1.0;
            if w.last_day != Some(day) {
                w.active_days += 1;
                w.last_day = Some(day);
            }
            if session_start {
                w.session_starts += 1.0;
            }
            match e.kind {
                EventKind::PageView => w.page_views += 1.0,
                EventKind::ProductView => w.product_views += 1.0,
                EventKind::AddToCart => w.carts += 1.0,
                EventKind::BotCommand => w.bot_commands += 1.0,
                EventKind::Purchase => {
                    w.purchases += 1.0;
                    if let Some(a) = e.amount {
                        w.spend += a;
                        w.amounts.push(a);
                    }
                }
                EventKind::Other => {}
            }
        };
        tally(&mut all);
        for (w, &n) in win.iter_mut().zip(WINDOWS.iter()) {
            if age <= n * MICROS_PER_DAY {
                tally(w);
            }
        }
        if age > 30 * MICROS_PER_DAY && age <= 90 * MICROS_PER_DAY {
            prior_60 += 1.0;
        }

        match e.kind {
            EventKind::Purchase => {
                if let Some(p) = last_purchase {
                    purchase_gaps.push(days(e.at - p));
                }
                first_purchase.get_or_insert(e.at);
                last_purchase = Some(e.at);
                if let Some(id) = e.product_id {
                    bought_products.insert(id);
                }
            }
            EventKind::AddToCart => last_cart = Some(e.at),
            EventKind::ProductView => {
                if let Some(id) = e.product_id {
                    viewed_products.insert(id);
                }
            }
            EventKind::BotCommand => {
                if let Some(c) = &e.command {
                    commands.insert(c.as_str());
                }
            }
            _ => {}
        }
        if let Some(p) = product {
            if let Some(c) = p.category {
                *category_counts.entry(c).or_default() += 1;
                match e.kind {
                    EventKind::ProductView => {
                        viewed_categories.insert(c);
                    }
                    EventKind::Purchase => {
                        bought_categories.insert(c);
                    }
                    _ => {}
                }
            }
            if e.kind == EventKind::ProductView {
                viewed_prices.extend(p.price);
            }
            if let Some(l) = p.level {
                levels.push(l);
                if e.kind == EventKind::Purchase {
                    bought_levels.push(l);
                }
            }
        }
    }

    let [w7, w14, w30, w60, _w90] = &win;
    let times = ActivityTimes {
        first_at,
        last_at,
        first_purchase,
        last_purchase,
        last_cart,
        registered: Some(user.registered_at),
    };
    let tr = TimeRelative::new(as_of, user, &times, all.spend);
    let has_products = products.is_some();
    let product_count = |n: usize| has_products.then_some(n as f64);
    // the most frequent category, the first by name among equals
    let favourite = category_counts
        .iter()
        .map(|(&c, &n)| (c, n))
        .min_by_key(|&(c, n)| (std::cmp::Reverse(n), c))
        .and_then(|(c, n)| Some((products?.category_name(c), n)));
    let category_total: u64 = category_counts.values().sum();

    let mut values: Vec<FeatureValue> = Vec::with_capacity(FEATURES.len());
    let mut put = |name: &str, v: FeatureValue| {
        debug_assert_eq!(FEATURES[values.len()].name, name, "feature order");
        values.push(v);
    };
    use FeatureValue::{Num, Text};
    let n = |x: f64| Num(Some(x));
    // one home for the features roll_forward moves: TimeRelative::value
    let moved = |name: &str| tr.value(name, user).unwrap_or(Num(None));

    put("days_since_registration", moved("days_since_registration"));
    put(
        "days_since_last_activity",
        moved("days_since_last_activity"),
    );
    put(
        "days_since_last_purchase",
        moved("days_since_last_purchase"),
    );
    put(
        "days_since_first_activity",
        moved("days_since_first_activity"),
    );
    put(
        "days_since_first_purchase",
        moved("days_since_first_purchase"),
    );
    put(
        "days_since_last_cart_addition",
        moved("days_since_last_cart_addition"),
    );
    put("events_last_7_days", n(w7.events));
    put("events_last_14_days", n(w14.events));
    put("events_last_30_days", n(w30.events));
    put("events_last_60_days", n(w60.events));
    put("events_total", n(all.events));
    put("active_days_last_7_days", n(w7.active_days as f64));
    put("active_days_last_30_days", n(w30.active_days as f64));
    put("active_days_total", n(all.active_days as f64));
    put("page_views_last_7_days", n(w7.page_views));
    put("page_views_last_30_days", n(w30.page_views));
    put("product_views_last_30_days", n(w30.product_views));
    put("cart_additions_last_30_days", n(w30.carts));
    put("purchases_last_7_days", n(w7.purchases));
    put("purchases_last_30_days", n(w30.purchases));
    put("purchases_last_60_days", n(w60.purchases));
    put("bot_commands_last_30_days", n(w30.bot_commands));
    put(
        "events_per_active_day",
        Num(ratio(all.events, all.active_days as f64)),
    );
    put(
        "activity_trend_7d_vs_14d",
        Num(ratio(w7.events, w14.events)),
    );
    put(
        "purchase_trend_30d_vs_60d",
        Num(ratio(w30.purchases, w60.purchases)),
    );
    let (r1, r2) = (w30.events / 30.0, prior_60 / 60.0);
    put("engagement_trend", Num(ratio(r1 - r2, r1 + r2)));
    put("spend_trend_30d_vs_60d", Num(ratio(w30.spend, w60.spend)));
    put(
        "product_view_trend_7d_vs_30d",
        Num(ratio(w7.product_views, w30.product_views)),
    );
    put(
        "active_days_trend_7d_vs_30d",
        Num(ratio(w7.active_days as f64, w30.active_days as f64)),
    );
    put("total_spent", n(all.spend));
    put("avg_order_value", Num(mean(&all.amounts)));
    put("purchase_count", n(all.purchases));
    put(
        "max_order_value",
        Num(all.amounts.iter().copied().reduce(f64::max)),
    );
    put(
        "min_order_value",
        Num(all.amounts.iter().copied().reduce(f64::min)),
    );
    put("order_value_stddev", Num(sample_std(&all.amounts)));
    put("spend_last_7_days", n(w7.spend));
    put("spend_last_30_days", n(w30.spend));
    put("spend_last_60_days", n(w60.spend));
    put("avg_order_value_last_60_days", Num(mean(&w60.amounts)));
    put("monthly_spend_rate", moved("monthly_spend_rate"));
    put("bot_commands_last_7_days", n(w7.bot_commands));
    put("product_views_last_7_days", n(w7.product_views));
    put("cart_additions_last_7_days", n(w7.carts));
    put("bot_commands_total", n(all.bot_commands));
    put("distinct_bot_commands", n(commands.len() as f64));
    put("product_views_total", n(all.product_views));
    put("cart_additions_total", n(all.carts));
    put(
        "view_to_cart_rate",
        Num(ratio(all.carts, all.product_views)),
    );
    put(
        "cart_to_purchase_rate",
        Num(ratio(all.purchases, all.carts)),
    );
    put(
        "view_to_purchase_rate",
        Num(ratio(all.purchases, all.product_views)),
    );
    put("distinct_products_viewed", n(viewed_products.len() as f64));
    put(
        "distinct_products_purchased",
        n(bought_products.len() as f64),
    );
    put(
        "distinct_categories_viewed",
        Num(product_count(viewed_categories.len())),
    );
    put(
        "distinct_categories_purchased",
        Num(product_count(bought_categories.len())),
    );
    put(
        "favourite_category",
        Text(favourite.map(|(c, _)| c.to_string())),
    );
    put(
        "favourite_category_share",
        Num(favourite.map(|(_, n)| n as f64 / category_total as f64)),
    );
    put("avg_viewed_price", Num(mean(&viewed_prices)));
    put("price_level_vs_category", Num(mean(&levels)));
    put(
        "purchased_price_level_vs_category",
        Num(mean(&bought_levels)),
    );
    put("sessions_total", n(all.session_starts));
    put("sessions_last_30_days", n(w30.session_starts));
    put(
        "avg_events_per_session",
        Num(ratio(all.events, all.session_starts)),
    );
    put(
        "avg_session_duration_minutes",
        Num(ratio(session_minutes, all.session_starts)),
    );
    put(
        "days_between_purchases_mean",
        Num(match (first_purchase, last_purchase) {
            (Some(f), Some(l)) if all.purchases >= 2.0 => Some(days(l - f) / (all.purchases - 1.0)),
            _ => None,
        }),
    );
    put(
        "days_between_purchases_std",
        Num(sample_std(&purchase_gaps)),
    );
    put("status", moved("status"));
    put("has_username", moved("has_username"));
    put("days_to_first_purchase", moved("days_to_first_purchase"));
    debug_assert_eq!(values.len(), FEATURES.len());
    debug_assert!(values.iter().zip(FEATURES).all(|(v, f)| match v {
        FeatureValue::Text(_) => f.kind == Kind::Category,
        FeatureValue::Num(_) => f.kind != Kind::Category,
    }));
    Some((
        FeatureVector {
            user_id: user.user_id,
            values,
        },
        times,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: i64 = 1_700_000_000 * 1_000_000;
    const D: i64 = MICROS_PER_DAY;

    fn user() -> UserRecord {
        UserRecord {
            user_id: 1,
            registered_at: T - 100 * D,
            status: Some("member".into()),
            has_username: Some(true),
        }
    }

    fn ev(at: i64, kind: &str, data: serde_json::Value) -> Event {
        Event::from_raw(at, kind, &data)
    }

    fn num(f: &FeatureVector, name: &str) -> Option<f64> {
        f.get(name).and_then(FeatureValue::as_f64)
    }

    #[test]
    fn no_events_gives_nulls_and_zeros() {
        let f = compute_features(T, &user(), &[], None).unwrap();
        assert_eq!(f.values.len(), FEATURES.len());
        assert_eq!(num(&f, "days_since_registration"), Some(100.0));
        assert_eq!(num(&f, "days_since_last_activity"), None);
        assert_eq!(num(&f, "events_last_7_days"), Some(0.0));
        assert_eq!(num(&f, "total_spent"), Some(0.0));
        assert_eq!(num(&f, "avg_order_value"), None);
        assert_eq!(
            num(&f, "distinct_categories_viewed"),
            None,
            "no products table"
        );
        assert_eq!(num(&f, "has_username"), Some(1.0));
    }

    #[test]
    fn user_registered_at_or_after_as_of_has_no_row() {
        let mut u = user();
        u.registered_at = T;
        assert!(compute_features(T, &u, &[], None).is_none());
    }

    #[test]
    fn window_border_is_inclusive_and_as_of_exclusive() {
        let events = [
            ev(T - 7 * D, "page_view", json!({})), // exactly on the 7-day border: inside
            ev(T - 7 * D - 1, "page_view", json!({})), // one microsecond earlier: outside
            ev(T, "page_view", json!({})),         // at as_of: not seen
            ev(T + D, "purchase", json!({"amount": 5})), // in the future: not seen
        ];
        let f = compute_features(T, &user(), &events, None).unwrap();
        assert_eq!(num(&f, "events_last_7_days"), Some(1.0));
        assert_eq!(num(&f, "events_last_14_days"), Some(2.0));
        assert_eq!(num(&f, "events_total"), Some(2.0));
        assert_eq!(num(&f, "purchase_count"), Some(0.0));
        assert_eq!(num(&f, "activity_trend_7d_vs_14d"), Some(0.5));
        assert_eq!(num(&f, "days_since_last_activity"), Some(7.0));
    }

    #[test]
    fn money_sessions_and_rhythm() {
        let p = |at, amount: serde_json::Value| ev(at, "purchase", json!({"amount": amount}));
        let events = [
            p(T - 40 * D, json!(10)),
            p(T - 20 * D, json!("30.5")),
            p(T - 10 * D, json!(-4)), // counts as a purchase, not as money
            ev(T - 10 * D + 10 * MICROS_PER_MINUTE, "page_view", json!({})),
        ];
        let f = compute_features(T, &user(), &events, None).unwrap();
        assert_eq!(num(&f, "purchase_count"), Some(3.0));
        assert_eq!(num(&f, "total_spent"), Some(40.5));
        assert_eq!(num(&f, "avg_order_value"), Some(20.25));
        assert_eq!(num(&f, "spend_last_30_days"), Some(30.5));
        assert_eq!(num(&f, "days_between_purchases_mean"), Some(15.0));
        assert!((num(&f, "days_between_purchases_std").unwrap() - 50f64.sqrt()).abs() < 1e-12);
        assert_eq!(num(&f, "sessions_total"), Some(3.0));
        assert_eq!(num(&f, "avg_session_duration_minutes"), Some(10.0 / 3.0));
        assert_eq!(num(&f, "days_to_first_purchase"), Some(60.0));
    }

    #[test]
    fn categories_and_price_levels() {
        let products = ProductTable::new([
            (
                1,
                Product {
                    category: Some("b".into()),
                    price: Some(10.0),
                },
            ),
            (
                2,
                Product {
                    category: Some("b".into()),
                    price: Some(30.0),
                },
            ),
            (
                3,
                Product {
                    category: Some("a".into()),
                    price: Some(5.0),
                },
            ),
            (
                4,
                Product {
                    category: Some("a".into()),
                    price: Some(f64::NAN),
                },
            ),
        ]);
        let v = |at, id: i64| ev(at, "product_view", json!({"product_id": id}));
        let events = [
            v(T - 3 * D, 1),
            v(T - 2 * D, 3),
            v(T - D, 4),
            ev(T - D, "purchase", json!({"product_id": "2", "amount": 30})),
        ];
        let f = compute_features(T, &user(), &events, Some(&products)).unwrap();
        // a: 2 events (3 and 4), b: 2 events (1 and 2): tie goes to "a"
        assert_eq!(f.get("favourite_category").unwrap().as_text(), Some("a"));
        assert_eq!(num(&f, "favourite_category_share"), Some(0.5));
        assert_eq!(num(&f, "distinct_categories_viewed"), Some(2.0));
        assert_eq!(num(&f, "distinct_categories_purchased"), Some(1.0));
        assert_eq!(num(&f, "avg_viewed_price"), Some(7.5));
        // levels: 10/20, 5/5, (NaN price skipped), 30/20
        assert_eq!(
            num(&f, "price_level_vs_category"),
            Some((0.5 + 1.0 + 1.5) / 3.0)
        );
        assert_eq!(num(&f, "purchased_price_level_vs_category"), Some(1.5));
    }

    /// The incremental refresh's promise: a user whose events stay as they were, moved to
    /// a later time from the stored row and the last 90 days of events, gets exactly the
    /// row a full computation gives, whatever windows the time crosses.
    #[test]
    fn roll_forward_equals_a_full_computation() {
        use crate::demo;
        let spec = demo::DemoSpec::new(300, 200, 11, T).unwrap();
        let catalogue = demo::products(11);
        let products = demo::product_table(&catalogue);
        let bits = |f: &FeatureVector| format!("{:?}", f.values);
        let (mut compared, mut crossing, mut carried_forward) = (0, 0, 0);
        for id in 1..=spec.n_users {
            let (user, events) = demo::feature_inputs(&spec, id, &catalogue);
            for frozen_at in [T - 150 * D, T - 40 * D - 5 * D / 7, T] {
                let history: Vec<Event> = events
                    .iter()
                    .filter(|e| e.at < frozen_at)
                    .cloned()
                    .collect();
                let Some((stored, times)) =
                    compute_features_timed(frozen_at, &user, &history, Some(&products))
                else {
                    continue;
                };
                for later in [
                    D / 24,
                    D,
                    7 * D + D / 3,
                    31 * D,
                    61 * D - 7,
                    95 * D,
                    400 * D,
                ] {
                    let as_of = frozen_at + later;
                    let recent: Vec<Event> = history
                        .iter()
                        .filter(|e| e.at > as_of - WINDOW_REACH_MICROS)
                        .cloned()
                        .collect();
                    crossing += usize::from(recent.len() < history.len());
                    let full = compute_features_timed(as_of, &user, &history, Some(&products));
                    let rolled =
                        roll_forward(as_of, &user, &recent, &stored, &times, Some(&products));
                    let (full, rolled) = (full.unwrap(), rolled.unwrap());
                    assert_eq!(rolled.1, full.1, "user {id} at +{later}");
                    assert_eq!(bits(&rolled.0), bits(&full.0), "user {id} at +{later}");
                    compared += 1;
                    // where only the time moved (every feature but the time-relative
                    // ones as stored), the stored row carried forward is the full one
                    let moved_only = FEATURES
                        .iter()
                        .zip(reaches())
                        .zip(stored.values.iter().zip(&full.0.values))
                        .all(|((_, reach), (a, b))| {
                            *reach == Reach::Moved || format!("{a:?}") == format!("{b:?}")
                        });
                    if moved_only {
                        let mut carried = stored.clone();
                        carry_forward(as_of, &mut carried, &times);
                        assert_eq!(bits(&carried), bits(&full.0), "user {id} at +{later}");
                        carried_forward += 1;
                    }
                }
            }
        }
        // the shop has enough users with events older than the windows to test the claim
        assert!(compared > 3000 && crossing > 1000, "{compared} {crossing}");
        assert!(carried_forward > 500, "{carried_forward}");
    }

    #[test]
    fn every_moved_feature_has_a_value() {
        let tr = TimeRelative::new(T, &user(), &ActivityTimes::default(), 0.0);
        for name in MOVED {
            assert!(tr.value(name, &user()).is_some(), "{name}");
            assert!(index_of(name).is_some(), "{name}");
        }
        for name in WINDOWED {
            assert!(index_of(name).is_some(), "{name}");
            assert!(!MOVED.contains(&name), "{name}");
        }
        let windowed = reaches().iter().filter(|r| **r == Reach::Window).count();
        assert_eq!(windowed, WINDOWED.len());
    }
}
