//! Random raw shops full of edge cases, for tests that compare the SQL feature path with
//! [`crate::features::compute_features`]. Raw means as a shop would store them: JSON as
//! text, NULLs where a careless shop could have them.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::events::{Event, MICROS_PER_DAY, MICROS_PER_MINUTE};
use crate::features::{compute_features, FeatureVector, Product, ProductTable, UserRecord};
use crate::snapshots::History;

#[derive(Debug, Clone)]
pub struct RawUser {
    pub id: i64,
    pub registered_at: i64,
    pub status: Option<String>,
    pub username: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RawEvent {
    pub user_id: Option<i64>,
    pub event_type: String,
    pub at: Option<i64>,
    /// JSON text; None is SQL NULL.
    pub data: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RawProduct {
    pub id: i64,
    pub category: Option<String>,
    pub price: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct RawShop {
    pub as_of: i64,
    pub users: Vec<RawUser>,
    pub events: Vec<RawEvent>,
    pub products: Vec<RawProduct>,
}

const TYPES: [&str; 7] = [
    "page_view",
    "product_view",
    "add_to_cart",
    "purchase",
    "bot_command",
    "signup",
    "product_view",
];

fn random_data(rng: &mut ChaCha8Rng, event_type: &str) -> Option<String> {
    Some(match rng.gen_range(0..20) {
        0 => return None,
        1 => "[1, 2]".into(),
        2 => "\"amount\"".into(),
        3 => "{}".into(),
        _ => {
            let pid = match rng.gen_range(0..8) {
                0 => r#""7""#.to_string(),
                1 => "12.5".to_string(),
                2 => [r#""x9""#, r#""007""#][rng.gen_range(0..2)].to_string(),
                3 => "999".to_string(), // not in the products table
                _ => rng.gen_range(1..=30).to_string(),
            };
            let amount = match rng.gen_range(0..12) {
                0 => "-5".to_string(),
                1 => r#""NaN""#.to_string(),
                2 => r#""abc""#.to_string(),
                3 => "1e20".to_string(),
                4 => r#"" 12.50 ""#.to_string(),
                5 => "null".to_string(),
                _ => format!("{:.2}", rng.gen_range(0.0..300.0)),
            };
            let command = match rng.gen_range(0..6) {
                0 => "5".to_string(),
                1 => "null".to_string(),
                _ => format!(
                    r#""/{}""#,
                    ["start", "deals", "cart", "help"][rng.gen_range(0..4)]
                ),
            };
            match event_type {
                "purchase" => {
                    format!(r#"{{"product_id": {pid}, "quantity": 1, "amount": {amount}}}"#)
                }
                "product_view" | "add_to_cart" => format!(r#"{{"product_id": {pid}}}"#),
                "bot_command" => format!(r#"{{"command": {command}}}"#),
                _ => r#"{"page": "home"}"#.to_string(),
            }
        }
    })
}

/// A small shop of about `n_users` users around `as_of`, with events before, on and
/// after window borders and after `as_of`.
pub fn random_shop(seed: u64, n_users: i64) -> RawShop {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let as_of: i64 = 1_750_000_000 * 1_000_000 + rng.gen_range(0..MICROS_PER_DAY);
    let categories = ["books", "toys", "garden", "Äpfel", "zoo"];
    let products = (1..=30)
        .map(|id| RawProduct {
            id,
            category: (rng.gen_range(0..10) > 0)
                .then(|| categories[rng.gen_range(0..categories.len())].to_string()),
            price: match rng.gen_range(0..15) {
                0 => None,
                1 => Some(0.0),
                2 => Some(-3.0),
                3 => Some(f64::NAN),
                _ => Some((rng.gen_range(1.0..200.0f64) * 100.0).round() / 100.0),
            },
        })
        .collect();
    let borders = [7, 14, 30, 60, 90];
    let mut users = Vec::new();
    let mut events = Vec::new();
    for id in 1..=n_users {
        let registered_at = match id % 10 {
            0 => as_of + rng.gen_range(0..5) * MICROS_PER_DAY, // on or after as_of
            1 => as_of - 1,
            _ => as_of - rng.gen_range(1..150) * MICROS_PER_DAY - rng.gen_range(0..MICROS_PER_DAY),
        };
        users.push(RawUser {
            id,
            registered_at,
            status: match rng.gen_range(0..4) {
                0 => None,
                1 => Some("subscriber".into()),
                _ => Some("member".into()),
            },
            username: match rng.gen_range(0..4) {
                0 => None,
                1 => Some(String::new()),
                _ => Some(format!("u{id}")),
            },
        });
        let n_events = match id % 7 {
            0 => 0,
            1 => rng.gen_range(1..4),
            _ => rng.gen_range(5..60),
        };
        let only_views = id % 11 == 5;
        let mut last = as_of - rng.gen_range(0..100) * MICROS_PER_DAY;
        for _ in 0..n_events {
            let at = match rng.gen_range(0..14) {
                0 => as_of - borders.choose(&mut rng).copied().unwrap_or(7) * MICROS_PER_DAY,
                1 => as_of,
                2 => as_of + rng.gen_range(1..MICROS_PER_DAY),
                3 => last,                          // equal timestamps
                4 => last + 30 * MICROS_PER_MINUTE, // exactly the session gap
                5 => last + 30 * MICROS_PER_MINUTE + 1,
                _ => as_of - rng.gen_range(1..120 * MICROS_PER_DAY),
            };
            last = at;
            let event_type = if only_views {
                "product_view"
            } else {
                TYPES[rng.gen_range(0..TYPES.len())]
            };
            events.push(RawEvent {
                user_id: Some(id),
                event_type: event_type.to_string(),
                at: Some(at),
                data: random_data(&mut rng, event_type),
            });
        }
    }
    // rows a careless shop may hold
    events.push(RawEvent {
        user_id: None,
        event_type: "purchase".into(),
        at: Some(as_of - MICROS_PER_DAY),
        data: Some(r#"{"amount": 10}"#.into()),
    });
    events.push(RawEvent {
        user_id: Some(2),
        event_type: "purchase".into(),
        at: None,
        data: Some(r#"{"amount": 10}"#.into()),
    });
    events.push(RawEvent {
        user_id: Some(n_users + 1000),
        event_type: "page_view".into(),
        at: Some(as_of - MICROS_PER_DAY),
        data: Some("{}".into()),
    });
    events.shuffle(&mut rng);
    RawShop {
        as_of,
        users,
        events,
        products,
    }
}

impl RawShop {
    pub fn product_table(&self) -> ProductTable {
        ProductTable::new(self.products.iter().map(|p| {
            (
                p.id,
                Product {
                    category: p.category.clone(),
                    price: p.price,
                },
            )
        }))
    }

    /// Every user's record and readable events (those with a time), with the rules of
    /// `events` applied, and the product table.
    pub fn histories(&self) -> (Vec<History>, ProductTable) {
        let histories = self
            .users
            .iter()
            .map(|u| History {
                user: UserRecord {
                    user_id: u.id,
                    registered_at: u.registered_at,
                    status: u.status.clone(),
                    has_username: Some(u.username.as_deref().is_some_and(|s| !s.is_empty())),
                },
                events: self
                    .events
                    .iter()
                    .filter(|e| e.user_id == Some(u.id))
                    .filter_map(|e| {
                        let data: Value = match &e.data {
                            Some(text) => serde_json::from_str(text).unwrap_or(Value::Null),
                            None => Value::Null,
                        };
                        Some(Event::from_raw(e.at?, &e.event_type, &data))
                    })
                    .collect(),
            })
            .collect();
        (histories, self.product_table())
    }

    /// The reference features of every user as of `as_of`, by user id.
    pub fn reference_features(&self, as_of: i64, with_products: bool) -> Vec<FeatureVector> {
        let (histories, table) = self.histories();
        let mut out: Vec<FeatureVector> = histories
            .iter()
            .filter_map(|h| {
                compute_features(as_of, &h.user, &h.events, with_products.then_some(&table))
            })
            .collect();
        out.sort_by_key(|f| f.user_id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_shops_are_reproducible_and_cover_edges() {
        let a = random_shop(3, 40);
        let b = random_shop(3, 40);
        assert_eq!(a.events.len(), b.events.len());
        assert!(a.events.iter().any(|e| e.at == Some(a.as_of)));
        assert!(a.events.iter().any(|e| e.data.is_none()));
        assert!(a.users.iter().any(|u| u.registered_at >= a.as_of));
        let f = a.reference_features(a.as_of, true);
        assert!(
            f.len() < a.users.len(),
            "users registered after as_of have no row"
        );
        assert!(f.iter().all(|f| f.user_id % 10 != 0));
    }
}
