//! The built-in demo shop: a Telegram-bot store with products, users and a history of
//! sessions that ends at a given time.
//!
//! Each user is simulated from its own random stream (seeded by the shop seed and the
//! user id), so the same seed gives the same shop, users can be produced lazily one by
//! one, and a user's attributes never depend on how many users were asked for.
//!
//! Customer types change behaviour over time so that churn and purchases are
//! predictable, but not trivially: every rate is drawn per user, weekly rates wobble,
//! and every type can leave at any time.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal, Poisson};

use crate::events::{MICROS_PER_DAY, MICROS_PER_SECOND};
use crate::Error;

pub const MAX_USERS: i64 = 1_000_000;
pub const MAX_DAYS: i64 = 3_650;
/// Caps the size of a shop (users x days): about 0.5 events per user-day, so the cap is
/// about 100 million events (18 GB with indexes; benches/sql_bench.sh checks the disk).
pub const MAX_USER_DAYS: i64 = 200_000_000;
pub const CATEGORIES: [&str; 10] = [
    "electronics",
    "books",
    "clothing",
    "home",
    "beauty",
    "sports",
    "toys",
    "groceries",
    "garden",
    "pets",
];
pub const N_PRODUCTS: i64 = 500;
const COMMANDS: [&str; 6] = [
    "/catalog",
    "/cart",
    "/orders",
    "/help",
    "/deals",
    "/settings",
];

/// What the generator is asked for. `ends_at` is microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct DemoSpec {
    pub n_users: i64,
    pub days: i64,
    pub seed: i64,
    pub ends_at: i64,
}

impl DemoSpec {
    pub fn new(n_users: i64, days: i64, seed: i64, ends_at: i64) -> Result<DemoSpec, Error> {
        if !(1..=MAX_USERS).contains(&n_users) {
            return Err(Error::InvalidParameter {
                name: "n_users",
                message: format!("n_users must be between 1 and {MAX_USERS}, got {n_users}"),
            });
        }
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(Error::InvalidParameter {
                name: "days",
                message: format!("days must be between 1 and {MAX_DAYS}, got {days}"),
            });
        }
        if n_users * days > MAX_USER_DAYS {
            return Err(Error::InvalidParameter {
                name: "n_users",
                message: format!(
                    "{n_users} users x {days} days is more than the generator's limit of {MAX_USER_DAYS} user-days"
                ),
            });
        }
        Ok(DemoSpec {
            n_users,
            days,
            seed,
            ends_at,
        })
    }

    fn starts_at(&self) -> i64 {
        self.ends_at - self.days * MICROS_PER_DAY
    }
}

/// The hidden behaviour of a demo customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CustomerType {
    Loyal,
    Occasional,
    BargainHunter,
    Fading,
    New,
}

impl CustomerType {
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerType::Loyal => "loyal",
            CustomerType::Occasional => "occasional",
            CustomerType::BargainHunter => "bargain_hunter",
            CustomerType::Fading => "fading",
            CustomerType::New => "new",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DemoProduct {
    pub id: i64,
    pub name: String,
    pub category: &'static str,
    /// Rounded to cents.
    pub price: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DemoUser {
    pub id: i64,
    pub telegram_id: i64,
    pub username: Option<String>,
    pub registered_at: i64,
    pub status: &'static str,
    pub customer_type: CustomerType,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DemoEvent {
    pub user_id: i64,
    pub event_type: &'static str,
    pub at: i64,
    /// event_data as JSON text.
    pub data: String,
}

fn mix(a: u64, b: u64) -> u64 {
    // splitmix64 finaliser: decorrelates neighbouring seeds and user ids
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rng_for(seed: i64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(seed as u64, stream))
}

/// The catalogue: 500 products in 10 categories, each category with its own price level.
pub fn products(seed: i64) -> Vec<DemoProduct> {
    let mut rng = rng_for(seed, u64::MAX);
    let levels: Vec<f64> = CATEGORIES
        .iter()
        .map(|_| rng.gen_range(8.0..120.0))
        .collect();
    let spread = LogNormal::new(0.0, 0.5).expect("constant parameters are valid");
    (1..=N_PRODUCTS)
        .map(|id| {
            let c = ((id - 1) % CATEGORIES.len() as i64) as usize;
            let price = (levels[c] * spread.sample(&mut rng) * 100.0).round() / 100.0;
            DemoProduct {
                id,
                name: format!(
                    "{} item {}",
                    CATEGORIES[c],
                    (id - 1) / CATEGORIES.len() as i64 + 1
                ),
                category: CATEGORIES[c],
                price: price.max(0.5),
            }
        })
        .collect()
}

/// Per-type behaviour: sessions per day, chance of carting a viewed product, chance of
/// buying what is in the cart, daily chance of leaving for good.
struct Behaviour {
    sessions_per_day: f64,
    cart_rate: f64,
    buy_rate: f64,
    leave_hazard: f64,
    /// Days after which activity starts to decay (fading and new customers).
    decay_after: Option<f64>,
    /// Half-life of the decay in days.
    half_life: f64,
}

struct UserDraw {
    user: DemoUser,
    rng: ChaCha8Rng,
}

fn draw_user(spec: &DemoSpec, id: i64) -> UserDraw {
    let mut rng = rng_for(spec.seed, id as u64);
    let r: f64 = rng.gen();
    let customer_type = match r {
        r if r < 0.15 => CustomerType::Loyal,
        r if r < 0.45 => CustomerType::Occasional,
        r if r < 0.60 => CustomerType::BargainHunter,
        r if r < 0.85 => CustomerType::Fading,
        _ => CustomerType::New,
    };
    let span = spec.days * MICROS_PER_DAY;
    // Registrations grow over time; new customers joined in the last sixth of the period.
    let u: f64 = rng.gen();
    let position = match customer_type {
        CustomerType::New => 1.0 - u / 6.0,
        _ => u.sqrt() * 0.97,
    };
    let registered_at = spec.starts_at() + ((span as f64) * position) as i64;
    let registered_at = registered_at.min(spec.ends_at - MICROS_PER_SECOND);
    let status = if rng.gen_bool(match customer_type {
        CustomerType::Loyal => 0.45,
        CustomerType::BargainHunter => 0.3,
        _ => 0.12,
    }) {
        "subscriber"
    } else {
        "member"
    };
    let username = rng.gen_bool(0.75).then(|| {
        format!(
            "{}_{}",
            ["anna", "max", "olga", "ivan", "kate", "tom", "lena", "sam"][rng.gen_range(0..8)],
            id
        )
    });
    UserDraw {
        user: DemoUser {
            id,
            telegram_id: 100_000_000 + id * 37 + rng.gen_range(0..37),
            username,
            registered_at,
            status,
            customer_type,
        },
        rng,
    }
}

/// One user's attributes, without simulating the history.
pub fn user(spec: &DemoSpec, id: i64) -> DemoUser {
    draw_user(spec, id).user
}

/// One user and its whole history, events in time order, all strictly before `ends_at`.
pub fn simulate_user(
    spec: &DemoSpec,
    id: i64,
    catalogue: &[DemoProduct],
) -> (DemoUser, Vec<DemoEvent>) {
    let UserDraw { user, mut rng } = draw_user(spec, id);
    let ln = |mu: f64, sigma: f64, rng: &mut ChaCha8Rng| {
        LogNormal::new(mu.ln(), sigma)
            .expect("constant parameters are valid")
            .sample(rng)
    };
    let b = match user.customer_type {
        CustomerType::Loyal => Behaviour {
            sessions_per_day: ln(0.4, 0.4, &mut rng),
            cart_rate: 0.3,
            buy_rate: 0.55,
            leave_hazard: 0.0015,
            decay_after: None,
            half_life: 0.0,
        },
        CustomerType::Occasional => Behaviour {
            sessions_per_day: ln(0.09, 0.5, &mut rng),
            cart_rate: 0.22,
            buy_rate: 0.4,
            leave_hazard: 0.004,
            decay_after: None,
            half_life: 0.0,
        },
        CustomerType::BargainHunter => Behaviour {
            sessions_per_day: ln(0.24, 0.4, &mut rng),
            cart_rate: 0.18,
            buy_rate: 0.3,
            leave_hazard: 0.003,
            decay_after: None,
            half_life: 0.0,
        },
        CustomerType::Fading => Behaviour {
            sessions_per_day: ln(0.33, 0.4, &mut rng),
            cart_rate: 0.25,
            buy_rate: 0.4,
            leave_hazard: 0.004,
            decay_after: Some(rng.gen_range(5.0..120.0)),
            half_life: rng.gen_range(5.0..30.0),
        },
        CustomerType::New => Behaviour {
            sessions_per_day: ln(0.7, 0.4, &mut rng),
            cart_rate: 0.2,
            buy_rate: 0.3,
            leave_hazard: 0.01,
            decay_after: Some(rng.gen_range(1.0..10.0)),
            // about half the newcomers settle into a steady rhythm
            half_life: if rng.gen_bool(0.5) {
                1e9
            } else {
                rng.gen_range(2.0..10.0)
            },
        },
    };
    // Favourite categories: two or three, with weights.
    let n_fav = rng.gen_range(2..=3);
    let favourites: Vec<usize> = (0..n_fav)
        .map(|_| rng.gen_range(0..CATEGORIES.len()))
        .collect();
    let leave_after_days = Exp::new(b.leave_hazard)
        .expect("hazard is positive")
        .sample(&mut rng);
    let session_gap = Exp::new(1.0 / 45.0).expect("constant rate");

    let mut events = Vec::new();
    let push = |events: &mut Vec<DemoEvent>, at: i64, event_type: &'static str, data: String| {
        if at < spec.ends_at {
            events.push(DemoEvent {
                user_id: id,
                event_type,
                at,
                data,
            });
        }
    };
    let first_day = user.registered_at;
    let mut day_start = first_day;
    let mut week_factor = 1.0;
    let mut first_session = true;
    let mut day_index = 0i64;
    while day_start < spec.ends_at {
        let age_days = day_index as f64;
        if age_days > leave_after_days {
            break;
        }
        if day_index % 7 == 0 {
            week_factor = ln(1.0, 0.35, &mut rng);
        }
        let mut rate = b.sessions_per_day * week_factor;
        if let Some(after) = b.decay_after {
            if age_days > after {
                rate *= 0.5f64.powf((age_days - after) / b.half_life);
            }
        }
        if first_session {
            rate = rate.max(1.0); // everybody opens the bot on the day they register
        }
        let sessions = if rate > 0.0 {
            Poisson::new(rate)
                .map(|p| p.sample(&mut rng) as u32)
                .unwrap_or(0)
        } else {
            0
        };
        let mut starts: Vec<i64> = (0..sessions)
            .map(|_| day_start + rng.gen_range(0..MICROS_PER_DAY))
            .collect();
        starts.sort_unstable();
        for start in starts {
            let mut t = start;
            let mut step = |rng: &mut ChaCha8Rng| {
                t += ((session_gap.sample(rng) + 2.0) * MICROS_PER_SECOND as f64) as i64;
                t
            };
            if first_session {
                push(
                    &mut events,
                    start,
                    "bot_command",
                    r#"{"command": "/start"}"#.into(),
                );
                first_session = false;
            } else if rng.gen_bool(if user.customer_type == CustomerType::BargainHunter {
                0.5
            } else {
                0.25
            }) {
                let cmd = if user.customer_type == CustomerType::BargainHunter && rng.gen_bool(0.6)
                {
                    "/deals"
                } else {
                    COMMANDS[rng.gen_range(0..COMMANDS.len())]
                };
                push(
                    &mut events,
                    start,
                    "bot_command",
                    format!(r#"{{"command": "{cmd}"}}"#),
                );
            }
            let pages = rng.gen_range(1..=2);
            for _ in 0..pages {
                let page = ["home", "catalog", "search"][rng.gen_range(0..3)];
                let at = step(&mut rng);
                push(
                    &mut events,
                    at,
                    "page_view",
                    format!(r#"{{"page": "{page}"}}"#),
                );
            }
            let views = 1 + Poisson::new(1.8)
                .map(|p| p.sample(&mut rng) as u32)
                .unwrap_or(0);
            let mut cart: Vec<&DemoProduct> = Vec::new();
            for _ in 0..views {
                let category = if rng.gen_bool(0.75) {
                    favourites[rng.gen_range(0..favourites.len())]
                } else {
                    rng.gen_range(0..CATEGORIES.len())
                };
                let mut pick = || {
                    let k = rng.gen_range(0..N_PRODUCTS / CATEGORIES.len() as i64) as usize;
                    &catalogue[category + k * CATEGORIES.len()]
                };
                let mut product = pick();
                if user.customer_type == CustomerType::BargainHunter {
                    for _ in 0..2 {
                        let other = pick();
                        if other.price < product.price {
                            product = other;
                        }
                    }
                }
                let at = step(&mut rng);
                push(
                    &mut events,
                    at,
                    "product_view",
                    format!(r#"{{"product_id": {}}}"#, product.id),
                );
                if rng.gen_bool(b.cart_rate) {
                    let quantity = rng.gen_range(1..=3);
                    let at = step(&mut rng);
                    push(
                        &mut events,
                        at,
                        "add_to_cart",
                        format!(
                            r#"{{"product_id": {}, "quantity": {quantity}}}"#,
                            product.id
                        ),
                    );
                    cart.push(product);
                }
            }
            if !cart.is_empty() && rng.gen_bool(b.buy_rate) {
                for product in cart {
                    let quantity = rng.gen_range(1..=2);
                    let amount = (product.price * quantity as f64 * 100.0).round() / 100.0;
                    let at = step(&mut rng);
                    push(
                        &mut events,
                        at,
                        "purchase",
                        format!(
                            r#"{{"product_id": {}, "quantity": {quantity}, "amount": {amount:.2}}}"#,
                            product.id
                        ),
                    );
                }
            }
        }
        day_start += MICROS_PER_DAY;
        day_index += 1;
    }
    events.sort_by_key(|e| e.at);
    (user, events)
}

/// The demo catalogue as the feature maths reads it.
pub fn product_table(catalogue: &[DemoProduct]) -> crate::features::ProductTable {
    crate::features::ProductTable::new(catalogue.iter().map(|p| {
        (
            p.id,
            crate::features::Product {
                category: Some(p.category.to_string()),
                price: Some(p.price),
            },
        )
    }))
}

/// One simulated user as the feature maths reads it (for benches and tests without a
/// database).
pub fn feature_inputs(
    spec: &DemoSpec,
    id: i64,
    catalogue: &[DemoProduct],
) -> (crate::features::UserRecord, Vec<crate::events::Event>) {
    let (u, evs) = simulate_user(spec, id, catalogue);
    let events = evs
        .iter()
        .map(|e| {
            let data = serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null);
            crate::events::Event::from_raw(e.at, e.event_type, &data)
        })
        .collect();
    let record = crate::features::UserRecord {
        user_id: u.id,
        registered_at: u.registered_at,
        status: Some(u.status.to_string()),
        has_username: Some(u.username.is_some()),
    };
    (record, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const END: i64 = 1_750_000_000 * 1_000_000;

    #[test]
    fn rejects_absurd_arguments() {
        assert!(DemoSpec::new(0, 180, 1, END).is_err());
        assert!(DemoSpec::new(-5, 180, 1, END).is_err());
        assert!(DemoSpec::new(10, 0, 1, END).is_err());
        assert!(DemoSpec::new(10, 100_000, 1, END).is_err());
        assert!(DemoSpec::new(MAX_USERS + 1, 10, 1, END).is_err());
        assert!(DemoSpec::new(MAX_USERS, MAX_DAYS, 1, END).is_err());
        assert!(DemoSpec::new(100_000, 180, 1, END).is_ok());
    }

    #[test]
    fn same_seed_same_shop_and_history_ends_before_end() {
        let spec = DemoSpec::new(50, 90, 7, END).unwrap();
        let cat = products(7);
        assert_eq!(cat, products(7));
        assert_eq!(cat.len(), 500);
        for id in 1..=50 {
            let (u, ev) = simulate_user(&spec, id, &cat);
            assert_eq!((u.clone(), ev.clone()), simulate_user(&spec, id, &cat));
            assert_eq!(u, user(&spec, id));
            assert!(u.registered_at >= END - 90 * MICROS_PER_DAY && u.registered_at < END);
            assert!(ev.iter().all(|e| e.at >= u.registered_at && e.at < END));
            assert!(ev.windows(2).all(|w| w[0].at <= w[1].at));
            for e in &ev {
                serde_json::from_str::<serde_json::Value>(&e.data).unwrap();
            }
        }
        let other = DemoSpec::new(50, 90, 8, END).unwrap();
        assert_ne!(
            simulate_user(&other, 3, &cat).1,
            simulate_user(&spec, 3, &cat).1
        );
    }

    #[test]
    fn shop_has_every_type_and_event_kind() {
        let spec = DemoSpec::new(2000, 180, 42, END).unwrap();
        let cat = products(42);
        let mut kinds = std::collections::HashSet::new();
        let mut types = std::collections::HashSet::new();
        let mut n_events = 0;
        for id in 1..=2000 {
            let (u, ev) = simulate_user(&spec, id, &cat);
            types.insert(u.customer_type);
            n_events += ev.len();
            kinds.extend(ev.iter().map(|e| e.event_type));
        }
        assert_eq!(types.len(), 5);
        assert_eq!(kinds.len(), 5);
        let per_user = n_events as f64 / 2000.0;
        assert!(
            (30.0..300.0).contains(&per_user),
            "{per_user} events per user"
        );
    }
}
