//! Events as the feature maths sees them, and the rules that turn a shop's raw
//! `event_type` / `event_data` into them. The SQL fast path applies the same rules
//! (see `src/features_sql.rs` in the extension); a test checks that both agree.

use serde_json::Value;

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;
/// A session ends after this long without an event.
pub const SESSION_GAP_MICROS: i64 = 30 * MICROS_PER_MINUTE;
/// Amounts at or above this are treated as garbage, not money.
pub const MAX_AMOUNT: f64 = 1e15;

/// The data rules as SQL conditions, so that the extension's feature query and its
/// data-quality report apply exactly the rules this module applies in Rust.
pub mod sql {
    use super::EventKind;

    /// `'page_view', 'product_view', ...`: the known event types, for `IN (...)`.
    pub fn known_types() -> String {
        EventKind::KNOWN
            .iter()
            .map(|k| format!("'{}'", k.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `event_type` as the small integer [`EventKind::from_code`] reads: 1.. for the known
    /// kinds in catalog order, 0 for anything else (NULL included).
    pub fn kind_code(event_type: &str) -> String {
        // a simple CASE: cheaper per event than array_position over the known types
        let arms: String = EventKind::KNOWN
            .iter()
            .map(|k| format!(" WHEN '{}' THEN {}", k.as_str(), k.code()))
            .collect();
        format!("(CASE {event_type}{arms} ELSE 0 END)::int2")
    }

    /// `text` (an `->>` of event_data) is money: see [`super::parse_amount`].
    pub fn is_amount(text: &str) -> String {
        // Rust's ASCII whitespace, spelled so that the pattern means the same whether
        // standard_conforming_strings is on (the regex reads \t) or off (the string does)
        format!(r"{text} ~ '^[ \t\n\f\r]*[0-9]{{1,15}}([.][0-9]+)?[ \t\n\f\r]*$'")
    }

    /// `text` is a product id: see [`super::parse_product_id`].
    pub fn is_product_id(text: &str) -> String {
        format!("{text} ~ '^(0|[1-9][0-9]{{0,17}})$'")
    }

    /// `column` (json) holds something jsonb cannot: the escape `\u0000`.
    pub fn unreadable_json(column: &str, is_json: bool) -> String {
        if is_json {
            format!(r"strpos({column}::text, E'\\u0000') > 0")
        } else {
            "false".into()
        }
    }

    /// `column` as jsonb. A `json` value that jsonb cannot hold reads as an empty object
    /// instead of failing the whole query.
    pub fn event_data(column: &str, is_json: bool) -> String {
        if is_json {
            format!(
                "CASE WHEN {} THEN '{{}}'::jsonb ELSE {column}::jsonb END",
                unreadable_json(column, true)
            )
        } else {
            format!("{column}::jsonb")
        }
    }
}

/// The event types the features know. Anything else counts as activity only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    PageView,
    ProductView,
    AddToCart,
    Purchase,
    BotCommand,
    Other,
}

impl EventKind {
    /// Every kind the features read, in catalog order.
    pub const KNOWN: [EventKind; 5] = [
        EventKind::PageView,
        EventKind::ProductView,
        EventKind::AddToCart,
        EventKind::Purchase,
        EventKind::BotCommand,
    ];

    /// The small integer `sql::kind_code` gives this kind (0 for Other).
    pub fn code(self) -> i16 {
        EventKind::KNOWN
            .iter()
            .position(|&k| k == self)
            .map_or(0, |i| i as i16 + 1)
    }

    /// The kind [`sql::kind_code`] gave `code`.
    pub fn from_code(code: i16) -> EventKind {
        usize::try_from(code)
            .ok()
            .and_then(|c| c.checked_sub(1))
            .and_then(|i| EventKind::KNOWN.get(i).copied())
            .unwrap_or(EventKind::Other)
    }

    pub fn parse(event_type: &str) -> EventKind {
        match event_type {
            "page_view" => EventKind::PageView,
            "product_view" => EventKind::ProductView,
            "add_to_cart" => EventKind::AddToCart,
            "purchase" => EventKind::Purchase,
            "bot_command" => EventKind::BotCommand,
            _ => EventKind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::PageView => "page_view",
            EventKind::ProductView => "product_view",
            EventKind::AddToCart => "add_to_cart",
            EventKind::Purchase => "purchase",
            EventKind::BotCommand => "bot_command",
            EventKind::Other => "other",
        }
    }

    /// Events that name a product whose category and price the features use.
    pub fn is_product_event(self) -> bool {
        matches!(
            self,
            EventKind::ProductView | EventKind::AddToCart | EventKind::Purchase
        )
    }
}

/// One event, already reduced to what the features read.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Microseconds since the Unix epoch.
    pub at: i64,
    pub kind: EventKind,
    /// Valid purchase amount (purchases only).
    pub amount: Option<f64>,
    /// Product id (product events only).
    pub product_id: Option<i64>,
    /// Bot command text (bot_command only).
    pub command: Option<String>,
}

impl Event {
    /// Applies the documented rules to a raw event. `data` that is not a JSON object
    /// (NULL, a string, an array) reads as an empty object.
    pub fn from_raw(at: i64, event_type: &str, data: &Value) -> Event {
        let kind = EventKind::parse(event_type);
        let field = |key: &str| data.as_object().and_then(|o| o.get(key));
        Event {
            at,
            kind,
            amount: if kind == EventKind::Purchase {
                field("amount").and_then(parse_amount)
            } else {
                None
            },
            product_id: if kind.is_product_event() {
                field("product_id").and_then(parse_product_id)
            } else {
                None
            },
            command: if kind == EventKind::BotCommand {
                field("command").and_then(json_text)
            } else {
                None
            },
        }
    }
}

/// How many of some events the content rules set aside: the event-level rules of the
/// data-quality report that a read event's kind and parsed fields decide, so that a
/// refresh that has read the events counts them without a second pass over them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAside {
    /// Events of a type the features do not know (they count as activity only).
    pub unknown_type: i64,
    /// Purchases without a valid amount.
    pub bad_amount: i64,
    /// Product events without a valid product id.
    pub bad_product: i64,
}

impl SetAside {
    pub fn add(&mut self, events: &[Event]) {
        for e in events {
            self.unknown_type += i64::from(e.kind == EventKind::Other);
            self.bad_amount += i64::from(e.kind == EventKind::Purchase && e.amount.is_none());
            self.bad_product += i64::from(e.kind.is_product_event() && e.product_id.is_none());
        }
    }
}

/// `event_data->>'amount'` as money: a JSON number or numeric string that is a plain
/// non-negative decimal with at most 15 integer digits. Negative values, NaN, text and
/// absurd magnitudes are not money. [`sql::is_amount`] is the same rule in SQL.
pub fn parse_amount(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|x| x.is_finite() && *x >= 0.0 && *x < MAX_AMOUNT),
        Value::String(s) => amount_from_text(s),
        _ => None,
    }
}

/// The text rule of [`parse_amount`], for the text `->>` gives (for a JSON number, its
/// digits): optional ASCII whitespace around 1 to 15 digits and an optional fraction.
pub fn amount_from_text(s: &str) -> Option<f64> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let (int, frac) = match t.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (t, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || int.len() > 15 || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    t.parse::<f64>().ok()
}

/// `event_data->>'product_id'` as a product id: a whole JSON number or a string of at
/// most 18 digits in canonical form (no leading zero), so that the text is the id's own
/// text. [`sql::is_product_id`] is the same rule in SQL.
pub fn parse_product_id(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .filter(|x| *x < 1_000_000_000_000_000_000)
            .map(|x| x as i64),
        Value::String(s) => product_id_from_text(s),
        _ => None,
    }
}

/// The text rule of [`parse_product_id`], for the text `->>` gives: 1 to 18 digits
/// without a leading zero (or "0").
pub fn product_id_from_text(s: &str) -> Option<i64> {
    let canonical = !s.is_empty()
        && s.len() <= 18
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// The text `->>` gives for a JSON value: strings unquoted, JSON null as NULL.
fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kind_codes_round_trip() {
        for (i, k) in EventKind::KNOWN.iter().enumerate() {
            assert_eq!(EventKind::from_code(i as i16 + 1), *k);
            assert_eq!(k.code(), i as i16 + 1);
        }
        assert_eq!(EventKind::Other.code(), 0);
        for c in [0, -1, 6, i16::MAX] {
            assert_eq!(EventKind::from_code(c), EventKind::Other);
        }
        assert_eq!(
            sql::kind_code("k"),
            "(CASE k WHEN 'page_view' THEN 1 WHEN 'product_view' THEN 2 WHEN 'add_to_cart' THEN 3 \
             WHEN 'purchase' THEN 4 WHEN 'bot_command' THEN 5 ELSE 0 END)::int2"
        );
    }

    #[test]
    fn amounts_follow_the_rule() {
        assert_eq!(parse_amount(&json!(12.5)), Some(12.5));
        assert_eq!(parse_amount(&json!("  7.25 ")), Some(7.25));
        assert_eq!(parse_amount(&json!(0)), Some(0.0));
        assert_eq!(parse_amount(&json!(-3)), None);
        assert_eq!(parse_amount(&json!("-3")), None);
        assert_eq!(parse_amount(&json!("NaN")), None);
        assert_eq!(parse_amount(&json!("abc")), None);
        assert_eq!(parse_amount(&json!("1.")), None);
        assert_eq!(parse_amount(&json!(".5")), None);
        assert_eq!(parse_amount(&json!("1e5")), None);
        assert_eq!(parse_amount(&json!("1234567890123456")), None);
        assert_eq!(parse_amount(&json!(1e16)), None);
        assert_eq!(parse_amount(&json!(null)), None);
        assert_eq!(parse_amount(&json!({"a": 1})), None);
    }

    #[test]
    fn product_ids_follow_the_rule() {
        assert_eq!(parse_product_id(&json!(17)), Some(17));
        assert_eq!(parse_product_id(&json!("17")), Some(17));
        assert_eq!(parse_product_id(&json!(17.5)), None);
        assert_eq!(parse_product_id(&json!(-1)), None);
        assert_eq!(parse_product_id(&json!("x1")), None);
        assert_eq!(parse_product_id(&json!("")), None);
        assert_eq!(parse_product_id(&json!("007")), None);
        assert_eq!(parse_product_id(&json!("0")), Some(0));
    }

    /// The text rules read what `->>` gives for the JSON values the value rules accept.
    #[test]
    fn text_rules_agree_with_the_value_rules() {
        for text in [
            "12",
            " 12.50 ",
            "0",
            "007",
            "1e3",
            "-1",
            "",
            "123456789012345678",
            "1234567890123456789",
            "12.",
            ".5",
            "\t3\n",
        ] {
            let v = json!(text);
            assert_eq!(amount_from_text(text), parse_amount(&v), "{text:?}");
            assert_eq!(product_id_from_text(text), parse_product_id(&v), "{text:?}");
        }
        // a JSON number's ->> text is its digits
        assert_eq!(product_id_from_text(&json!(17).to_string()), Some(17));
        assert_eq!(amount_from_text(&json!(99.14).to_string()), Some(99.14));
    }

    #[test]
    fn sql_rules_spell_the_same_patterns() {
        assert_eq!(
            sql::is_amount("a"),
            r"a ~ '^[ \t\n\f\r]*[0-9]{1,15}([.][0-9]+)?[ \t\n\f\r]*$'"
        );
        assert_eq!(sql::is_product_id("p"), "p ~ '^(0|[1-9][0-9]{0,17})$'");
        assert!(sql::known_types().starts_with("'page_view', 'product_view'"));
        assert!(sql::event_data("e.d", true).contains(r"E'\\u0000'"));
        assert_eq!(sql::event_data("e.d", false), "e.d::jsonb");
    }

    #[test]
    fn set_aside_counts_what_the_rules_set_aside() {
        let raw = [
            ("purchase", json!({"amount": 5, "product_id": 3})),
            ("purchase", json!({"amount": -5, "product_id": "007"})),
            ("purchase", json!([1])),
            ("product_view", json!({"product_id": 4})),
            ("add_to_cart", json!({})),
            ("page_view", json!({"product_id": "x"})),
            ("teleport", json!({"amount": "x"})),
            ("bot_command", json!({"command": "/start"})),
        ];
        let events: Vec<Event> = raw
            .iter()
            .map(|(kind, data)| Event::from_raw(0, kind, data))
            .collect();
        let mut counted = SetAside::default();
        counted.add(&events[..4]);
        counted.add(&events[4..]);
        assert_eq!(
            counted,
            SetAside {
                unknown_type: 1,
                bad_amount: 2,
                bad_product: 3,
            }
        );
    }

    #[test]
    fn malformed_event_data_reads_as_empty() {
        let e = Event::from_raw(0, "purchase", &json!([1, 2]));
        assert_eq!(e.amount, None);
        assert_eq!(e.product_id, None);
        let e = Event::from_raw(0, "purchase", &json!("amount"));
        assert_eq!(e.amount, None);
        let e = Event::from_raw(0, "bot_command", &json!({"command": "/start"}));
        assert_eq!(e.command.as_deref(), Some("/start"));
        assert_eq!(
            Event::from_raw(0, "signup", &json!({})).kind,
            EventKind::Other
        );
    }
}
