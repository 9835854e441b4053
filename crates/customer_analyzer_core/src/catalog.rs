//! The feature catalog: every feature's name, group, SQL type, unit and meaning.
//!
//! The order here is the column order of `customer_analyzer.feature_row`, of
//! `user_features()` and of [`crate::features::FeatureVector`]; a test in the extension
//! checks that the SQL type matches this list column by column.

/// How a feature is stored in SQL and held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole number (`bigint`): counts and 0/1 flags. Never NULL unless its source is missing.
    Count,
    /// A real number (`float8`); NULL when the feature has no value for the user.
    Real,
    /// A category (`text`); encoded by the model's preprocessing.
    Category,
}

impl Kind {
    pub fn sql_type(self) -> &'static str {
        match self {
            Kind::Count => "bigint",
            Kind::Real => "double precision",
            Kind::Category => "text",
        }
    }
}

/// One catalogued feature.
#[derive(Debug, Clone, Copy)]
pub struct FeatureDef {
    pub name: &'static str,
    pub group: &'static str,
    pub kind: Kind,
    pub unit: &'static str,
    pub description: &'static str,
}

/// Bumped whenever a feature's name, order or definition changes; stored with models.
pub const CATALOG_VERSION: i32 = 1;

/// Conventions shared by every feature, shown with the catalog.
pub const CONVENTIONS: &str = "Features are computed as of a time T from events strictly before T. \
A window of N days is [T - N*24 hours, T). Days are fractional (float8). A purchase's value is \
event_data->>'amount' when it is a non-negative decimal below 1e15; other purchases still count as \
purchases but add no money. A feature with no value (no purchase, no events, no products table) is NULL, \
never 0 or a sentinel; counts and sums are 0 when nothing happened.";

const fn def(
    name: &'static str,
    group: &'static str,
    kind: Kind,
    unit: &'static str,
    description: &'static str,
) -> FeatureDef {
    FeatureDef {
        name,
        group,
        kind,
        unit,
        description,
    }
}

use Kind::{Category, Count, Real};

/// The catalog, in column order.
pub const FEATURES: &[FeatureDef] = &[
    // recency
    def("days_since_registration", "recency", Real, "days", "Days from registration to T."),
    def("days_since_last_activity", "recency", Real, "days", "Days from the last event before T to T; NULL without events."),
    def("days_since_last_purchase", "recency", Real, "days", "Days from the last purchase before T to T; NULL without purchases."),
    def("days_since_first_activity", "recency", Real, "days", "Days from the first event to T; NULL without events."),
    def("days_since_first_purchase", "recency", Real, "days", "Days from the first purchase to T; NULL without purchases."),
    def("days_since_last_cart_addition", "recency", Real, "days", "Days from the last add_to_cart to T; NULL without cart additions."),
    // activity windows
    def("events_last_7_days", "activity", Count, "events", "Events of any type in [T-7d, T)."),
    def("events_last_14_days", "activity", Count, "events", "Events of any type in [T-14d, T)."),
    def("events_last_30_days", "activity", Count, "events", "Events of any type in [T-30d, T)."),
    def("events_last_60_days", "activity", Count, "events", "Events of any type in [T-60d, T)."),
    def("events_total", "activity", Count, "events", "Events of any type before T, unknown types included."),
    def("active_days_last_7_days", "activity", Count, "days", "Distinct UTC calendar days with an event in [T-7d, T)."),
    def("active_days_last_30_days", "activity", Count, "days", "Distinct UTC calendar days with an event in [T-30d, T)."),
    def("active_days_total", "activity", Count, "days", "Distinct UTC calendar days with an event before T."),
    def("page_views_last_7_days", "activity", Count, "events", "page_view events in [T-7d, T)."),
    def("page_views_last_30_days", "activity", Count, "events", "page_view events in [T-30d, T)."),
    def("product_views_last_30_days", "activity", Count, "events", "product_view events in [T-30d, T)."),
    def("cart_additions_last_30_days", "activity", Count, "events", "add_to_cart events in [T-30d, T)."),
    def("purchases_last_7_days", "activity", Count, "purchases", "purchase events in [T-7d, T)."),
    def("purchases_last_30_days", "activity", Count, "purchases", "purchase events in [T-30d, T)."),
    def("purchases_last_60_days", "activity", Count, "purchases", "purchase events in [T-60d, T)."),
    def("bot_commands_last_30_days", "activity", Count, "events", "bot_command events in [T-30d, T)."),
    def("events_per_active_day", "activity", Real, "events/day", "events_total / active_days_total; NULL without events."),
    // trends
    def("activity_trend_7d_vs_14d", "trend", Real, "ratio", "events_last_7_days / events_last_14_days (0.5 = steady); NULL when no events in 14 days."),
    def("purchase_trend_30d_vs_60d", "trend", Real, "ratio", "purchases_last_30_days / purchases_last_60_days; NULL when no purchases in 60 days."),
    def("engagement_trend", "trend", Real, "index -1..1", "(r1 - r2) / (r1 + r2) with r1 = daily event rate in [T-30d, T) and r2 = daily rate in [T-90d, T-30d); NULL when both are 0."),
    def("spend_trend_30d_vs_60d", "trend", Real, "ratio", "spend_last_30_days / spend_last_60_days; NULL when nothing was spent in 60 days."),
    def("product_view_trend_7d_vs_30d", "trend", Real, "ratio", "product_views_last_7_days / product_views_last_30_days; NULL without product views in 30 days."),
    def("active_days_trend_7d_vs_30d", "trend", Real, "ratio", "active_days_last_7_days / active_days_last_30_days; NULL without activity in 30 days."),
    // money
    def("total_spent", "money", Real, "currency", "Sum of valid purchase amounts before T; 0 without purchases."),
    def("avg_order_value", "money", Real, "currency", "Mean valid purchase amount; NULL without one."),
    def("purchase_count", "money", Count, "purchases", "purchase events before T (with or without a valid amount)."),
    def("max_order_value", "money", Real, "currency", "Largest valid purchase amount; NULL without one."),
    def("min_order_value", "money", Real, "currency", "Smallest valid purchase amount; NULL without one."),
    def("order_value_stddev", "money", Real, "currency", "Sample standard deviation of valid purchase amounts; NULL with fewer than two."),
    def("spend_last_7_days", "money", Real, "currency", "Sum of valid amounts in [T-7d, T); 0 when none."),
    def("spend_last_30_days", "money", Real, "currency", "Sum of valid amounts in [T-30d, T); 0 when none."),
    def("spend_last_60_days", "money", Real, "currency", "Sum of valid amounts in [T-60d, T); 0 when none."),
    def("avg_order_value_last_60_days", "money", Real, "currency", "Mean valid amount in [T-60d, T); NULL without one."),
    def("monthly_spend_rate", "money", Real, "currency/30 days", "total_spent / days_since_registration * 30."),
    // bot and shop interactions
    def("bot_commands_last_7_days", "interaction", Count, "events", "bot_command events in [T-7d, T)."),
    def("product_views_last_7_days", "interaction", Count, "events", "product_view events in [T-7d, T)."),
    def("cart_additions_last_7_days", "interaction", Count, "events", "add_to_cart events in [T-7d, T)."),
    def("bot_commands_total", "interaction", Count, "events", "bot_command events before T."),
    def("distinct_bot_commands", "interaction", Count, "commands", "Distinct values of event_data->>'command' among bot_command events."),
    def("product_views_total", "interaction", Count, "events", "product_view events before T."),
    def("cart_additions_total", "interaction", Count, "events", "add_to_cart events before T."),
    def("view_to_cart_rate", "interaction", Real, "ratio", "cart_additions_total / product_views_total; NULL without product views."),
    def("cart_to_purchase_rate", "interaction", Real, "ratio", "purchase_count / cart_additions_total; NULL without cart additions."),
    def("view_to_purchase_rate", "interaction", Real, "ratio", "purchase_count / product_views_total; NULL without product views."),
    // product and category behaviour
    def("distinct_products_viewed", "product", Count, "products", "Distinct event_data->>'product_id' among product_view events."),
    def("distinct_products_purchased", "product", Count, "products", "Distinct event_data->>'product_id' among purchase events."),
    def("distinct_categories_viewed", "product", Count, "categories", "Distinct categories of viewed products; NULL without a products table."),
    def("distinct_categories_purchased", "product", Count, "categories", "Distinct categories of purchased products; NULL without a products table."),
    def("favourite_category", "product", Category, "category", "Category with most product_view/add_to_cart/purchase events (ties: first in byte order); NULL without one."),
    def("favourite_category_share", "product", Real, "share", "Share of the favourite category among product events with a known category."),
    def("avg_viewed_price", "product", Real, "currency", "Mean current price of viewed products (prices > 0 only)."),
    def("price_level_vs_category", "product", Real, "ratio", "Mean of price / category mean price over product events; 1 = average, < 1 = cheaper. Prices are the products table's current ones."),
    def("purchased_price_level_vs_category", "product", Real, "ratio", "As price_level_vs_category, over purchases only."),
    // sessions and rhythm
    def("sessions_total", "session", Count, "sessions", "Sessions before T; a session ends after 30 minutes without an event."),
    def("sessions_last_30_days", "session", Count, "sessions", "Sessions that started in [T-30d, T)."),
    def("avg_events_per_session", "session", Real, "events", "events_total / sessions_total; NULL without events."),
    def("avg_session_duration_minutes", "session", Real, "minutes", "Mean time from a session's first to its last event; NULL without events."),
    def("days_between_purchases_mean", "session", Real, "days", "Mean gap between consecutive purchases; NULL with fewer than two purchases."),
    def("days_between_purchases_std", "session", Real, "days", "Sample standard deviation of gaps between purchases; NULL with fewer than three."),
    // profile
    def("status", "profile", Category, "category", "users.status as stored now (the users table keeps no history); NULL without the column."),
    def("has_username", "profile", Count, "flag", "1 when users.username is set and not empty, else 0; NULL without the column."),
    def("days_to_first_purchase", "profile", Real, "days", "Days from registration to the first purchase; NULL without purchases."),
];

/// Position of a feature in the catalog.
pub fn index_of(name: &str) -> Option<usize> {
    FEATURES.iter().position(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn catalog_has_sixty_unique_features() {
        assert!(FEATURES.len() >= 60, "only {} features", FEATURES.len());
        let names: HashSet<_> = FEATURES.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), FEATURES.len(), "duplicate feature names");
    }

    #[test]
    fn design_names_are_kept() {
        for name in [
            "days_since_registration",
            "days_since_last_activity",
            "days_since_last_purchase",
            "events_last_7_days",
            "events_last_14_days",
            "events_last_30_days",
            "events_last_60_days",
            "activity_trend_7d_vs_14d",
            "purchase_trend_30d_vs_60d",
            "engagement_trend",
            "total_spent",
            "avg_order_value",
            "purchase_count",
            "bot_commands_last_7_days",
            "product_views_last_7_days",
            "cart_additions_last_7_days",
        ] {
            assert!(index_of(name).is_some(), "{name} is missing");
        }
    }

    #[test]
    fn names_are_sql_identifiers() {
        for f in FEATURES {
            assert!(f
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
            assert!(!f.description.is_empty());
        }
    }
}
