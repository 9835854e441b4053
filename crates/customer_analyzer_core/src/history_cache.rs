//! The rescoring worker's copy of the event histories it read, so that a user's next
//! event costs a read of the new events only, not of the whole history (which was most
//! of the worker's time: one heap page per event).
//!
//! A kept history holds every event of the user with `created_at` up to `newest`, as of
//! the read that filled it. The queue says, per user, the earliest `created_at` among the
//! events inserted since (`rescore_queue.earliest_event_at`, '-infinity' after an update
//! or delete). When that is after `newest`, nothing the copy holds can have changed, and
//! the events after `newest` are all that is missing (an event committed after a read
//! with a `created_at` at or before `newest` is exactly the case the queue flags). Else,
//! and for entries older than a bound, the history is read again in full.

use rustc_hash::FxHashMap;

use crate::events::{Event, EventKind};

/// One user's kept history.
struct Kept {
    events: Packed,
    /// The newest event's `created_at` (microseconds).
    newest: i64,
    /// When the history was last read in full (the caller's clock, microseconds).
    read_in_full_at: i64,
    bytes: usize,
    last_used: u64,
}

/// Events packed by column, about 13 bytes each where an [`Event`] takes 72: a budget
/// holds five times the users. Kept as `Vec<Event>`, the demo shop's 10,000 users (225
/// events each) outgrew the default 128 MB and 15% of the users the worker rescored were
/// read in full again (one heap page per event); packed, 1%.
#[derive(Default)]
struct Packed {
    at: Vec<i64>,
    /// The kind's code and which of the optional fields the event has.
    tags: Vec<u8>,
    amounts: Vec<f64>,
    product_ids: Vec<i64>,
    commands: Vec<Box<str>>,
}

const HAS_AMOUNT: u8 = 1 << 4;
const HAS_PRODUCT: u8 = 1 << 5;
const HAS_COMMAND: u8 = 1 << 6;
const KIND: u8 = 0x0f;

impl Packed {
    fn of(events: &[Event]) -> Packed {
        let mut p = Packed {
            at: Vec::with_capacity(events.len()),
            tags: Vec::with_capacity(events.len()),
            ..Packed::default()
        };
        p.extend(events);
        p.amounts.shrink_to_fit();
        p.product_ids.shrink_to_fit();
        p
    }

    fn extend(&mut self, events: &[Event]) {
        for e in events {
            // codes are 0..=5 (EventKind::KNOWN and Other): four bits hold them
            let mut tag = e.kind.code() as u8 & KIND;
            if let Some(a) = e.amount {
                tag |= HAS_AMOUNT;
                self.amounts.push(a);
            }
            if let Some(p) = e.product_id {
                tag |= HAS_PRODUCT;
                self.product_ids.push(p);
            }
            if let Some(c) = &e.command {
                tag |= HAS_COMMAND;
                self.commands.push(c.as_str().into());
            }
            self.at.push(e.at);
            self.tags.push(tag);
        }
    }

    fn unpack(&self) -> Vec<Event> {
        let (mut amounts, mut product_ids, mut commands) = (
            self.amounts.iter(),
            self.product_ids.iter(),
            self.commands.iter(),
        );
        self.at
            .iter()
            .zip(&self.tags)
            .map(|(&at, &tag)| Event {
                at,
                kind: EventKind::from_code(i16::from(tag & KIND)),
                amount: (tag & HAS_AMOUNT != 0)
                    .then(|| amounts.next().copied())
                    .flatten(),
                product_id: (tag & HAS_PRODUCT != 0)
                    .then(|| product_ids.next().copied())
                    .flatten(),
                command: (tag & HAS_COMMAND != 0)
                    .then(|| commands.next().map(|c| c.to_string()))
                    .flatten(),
            })
            .collect()
    }

    fn newest(&self) -> Option<i64> {
        self.at.iter().copied().max()
    }

    /// Approximate heap bytes.
    fn bytes(&self) -> usize {
        use std::mem::size_of;
        self.at.capacity() * size_of::<i64>()
            + self.tags.capacity()
            + self.amounts.capacity() * size_of::<f64>()
            + self.product_ids.capacity() * size_of::<i64>()
            + self.commands.capacity() * size_of::<Box<str>>()
            + self.commands.iter().map(|c| c.len()).sum::<usize>()
    }
}

/// Kept histories, within a memory budget (least recently used go first).
pub struct HistoryCache {
    kept: FxHashMap<i64, Kept>,
    bytes: usize,
    budget: usize,
    /// A full read is done again after this long, whatever the queue says: it bounds
    /// what a change the queue never saw (a session that turned real time off) can cost.
    max_age: i64,
    clock: u64,
}

impl HistoryCache {
    /// A cache of at most `budget` bytes whose histories are read again in full after
    /// `max_age` microseconds.
    pub fn new(budget: usize, max_age: i64) -> HistoryCache {
        HistoryCache {
            kept: FxHashMap::default(),
            bytes: 0,
            budget,
            max_age,
            clock: 0,
        }
    }

    /// Where to start reading `user_id`'s events at time `now`, given the earliest
    /// `created_at` the queue recorded for them: `Some(t)` to read only the events after
    /// `t` (the kept history holds the rest), None to read them all.
    pub fn read_after(&self, user_id: i64, earliest_queued: i64, now: i64) -> Option<i64> {
        let k = self.kept.get(&user_id)?;
        (earliest_queued > k.newest && now - k.read_in_full_at < self.max_age).then_some(k.newest)
    }

    /// The user's whole history, given what was read: `events` after `after` (as
    /// [`read_after`](Self::read_after) said), or all of them when `after` is None; None
    /// when the kept part is gone (only [`clear`](Self::clear) or
    /// [`forget`](Self::forget) between the two calls can do that: nothing is evicted
    /// before [`trim`](Self::trim)), and the user must be read in full. The result is
    /// kept for next time (as read in full at `now`, for a full read).
    pub fn merge(
        &mut self,
        user_id: i64,
        after: Option<i64>,
        events: Vec<Event>,
        now: i64,
    ) -> Option<Vec<Event>> {
        self.clock += 1;
        let (packed, all, read_in_full_at) = match (after, self.take(user_id)) {
            (Some(t), Some(mut k)) if k.newest == t => {
                k.events.extend(&events);
                let all = k.events.unpack();
                (k.events, all, k.read_in_full_at)
            }
            (Some(_), _) => return None,
            (None, _) => (Packed::of(&events), events, now),
        };
        let Some(newest) = packed.newest() else {
            return Some(all);
        };
        let bytes = packed.bytes() + std::mem::size_of::<Kept>();
        if bytes <= self.budget / 4 {
            self.bytes += bytes;
            self.kept.insert(
                user_id,
                Kept {
                    events: packed,
                    newest,
                    read_in_full_at,
                    bytes,
                    last_used: self.clock,
                },
            );
        }
        Some(all)
    }

    /// Forgets a user (no longer in the users table, or not registered yet).
    pub fn forget(&mut self, user_id: i64) {
        self.take(user_id);
    }

    /// Forgets everything (the events table or the configuration changed).
    pub fn clear(&mut self) {
        self.kept.clear();
        self.bytes = 0;
    }

    /// The budget it was made with.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Users held.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    fn take(&mut self, user_id: i64) -> Option<Kept> {
        let k = self.kept.remove(&user_id)?;
        self.bytes -= k.bytes;
        Some(k)
    }

    /// Over budget: drops the least recently used down to three quarters of it. Called
    /// after a batch, so that no history a batch is reading goes in the middle of it.
    pub fn trim(&mut self) {
        if self.bytes <= self.budget {
            return;
        }
        let mut by_use: Vec<(u64, i64)> =
            self.kept.iter().map(|(&u, k)| (k.last_used, u)).collect();
        by_use.sort_unstable();
        for (_, user) in by_use {
            if self.bytes <= self.budget / 4 * 3 {
                break;
            }
            self.take(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;

    fn ev(at: i64) -> Event {
        Event {
            at,
            kind: EventKind::PageView,
            amount: None,
            product_id: None,
            command: None,
        }
    }

    const MINUTE: i64 = 60_000_000;

    #[test]
    fn only_events_after_the_kept_ones_are_read_while_the_queue_allows() {
        let mut c = HistoryCache::new(1 << 20, 10 * MINUTE);
        assert_eq!(c.read_after(1, 100, 0), None, "nothing kept: read all");
        let all = c.merge(1, None, vec![ev(10), ev(30), ev(20)], 0).unwrap();
        assert_eq!(all.len(), 3);
        // a new event after the newest kept one: read from 30 on
        assert_eq!(c.read_after(1, 31, MINUTE), Some(30));
        let all = c.merge(1, Some(30), vec![ev(31)], MINUTE).unwrap();
        assert_eq!(
            all.iter().map(|e| e.at).collect::<Vec<_>>(),
            [10, 30, 20, 31]
        );
        // a late event (at or before the newest kept), an update or delete (-infinity):
        // read everything again
        assert_eq!(c.read_after(1, 31, MINUTE), None);
        assert_eq!(c.read_after(1, 5, MINUTE), None);
        assert_eq!(c.read_after(1, i64::MIN, MINUTE), None);
        // a full read replaces the kept history
        let all = c.merge(1, None, vec![ev(10)], 2 * MINUTE).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(c.read_after(1, 11, 2 * MINUTE), Some(10));
        // too old: a full read whatever the queue says
        assert_eq!(c.read_after(1, 11, 12 * MINUTE + 1), None);
        // the age counts from the last full read, not from incremental ones
        c.merge(1, Some(10), vec![ev(11)], 5 * MINUTE);
        assert_eq!(c.read_after(1, 12, 12 * MINUTE + 1), None);
    }

    #[test]
    fn a_partial_read_without_its_kept_part_is_refused() {
        let mut c = HistoryCache::new(1 << 20, 10 * MINUTE);
        c.merge(1, None, vec![ev(10)], 0);
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.merge(1, Some(10), vec![ev(11)], 0), None);
        assert_eq!(c.read_after(1, 12, 0), None);
        // no events: nothing to keep
        c.merge(2, None, vec![], 0);
        assert_eq!(c.read_after(2, 1, 0), None);
        c.merge(3, None, vec![ev(1)], 0);
        c.forget(3);
        assert_eq!(c.read_after(3, 2, 0), None);
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn the_budget_drops_the_least_recently_used() {
        let ten: Vec<Event> = (0..10).map(ev).collect();
        let per_user = std::mem::size_of::<Kept>() + Packed::of(&ten).bytes();
        let mut c = HistoryCache::new(per_user * 8, 10 * MINUTE);
        for u in 0..20 {
            c.merge(u, None, (0..10).map(ev).collect(), 0);
            c.trim();
            assert!(c.bytes() <= per_user * 8);
        }
        // nothing goes before trim(): a batch's histories stay while it is read
        let before = c.len();
        let kept: Vec<i64> = (0..20)
            .filter(|&u| c.read_after(u, 100, 0).is_some())
            .collect();
        for u in 100..110 {
            c.merge(u, None, (0..10).map(ev).collect(), 0);
        }
        assert_eq!(c.len(), before + 10);
        for u in kept {
            assert!(c.merge(u, Some(9), vec![ev(10)], 0).is_some());
        }
        c.trim();
        assert!(c.bytes() <= per_user * 8);
        // the newest users are kept, the oldest went
        assert!(c.read_after(19, 100, 0).is_some());
        assert!(c.read_after(0, 100, 0).is_none());
        assert!(c.len() >= 4 && c.len() <= 8, "{}", c.len());
        // a history bigger than a quarter of the budget is never kept
        c.merge(99, None, (0..100).map(ev).collect(), 0);
        assert!(c.read_after(99, 1000, 0).is_none());
    }

    #[test]
    fn packed_histories_give_back_every_field_in_order_for_a_fifth_of_the_memory() {
        let kinds = [
            EventKind::PageView,
            EventKind::ProductView,
            EventKind::AddToCart,
            EventKind::Purchase,
            EventKind::BotCommand,
            EventKind::Other,
        ];
        // every kind with every combination of the optional fields, times out of order
        let events: Vec<Event> = (0..96)
            .map(|i: i64| Event {
                at: (i * 7_919) % 97 - 40,
                kind: kinds[i as usize % 6],
                amount: (i % 2 == 0).then_some(i as f64 * 1.25),
                product_id: (i % 3 != 0).then_some(i64::MIN + i),
                command: (i % 5 == 0).then(|| format!("/cmd{i}")),
            })
            .collect();
        let (first, rest) = events.split_at(50);
        let mut p = Packed::of(first);
        p.extend(rest);
        assert_eq!(p.unpack(), events);
        assert_eq!(p.newest(), events.iter().map(|e| e.at).max());

        // a shop's mix: views, some with a product, a purchase in twenty
        let shop: Vec<Event> = (0..1_000)
            .map(|i: i64| Event {
                at: i,
                kind: if i % 20 == 0 {
                    EventKind::Purchase
                } else {
                    EventKind::ProductView
                },
                amount: (i % 20 == 0).then_some(10.0),
                product_id: (i % 2 == 0).then_some(i),
                command: None,
            })
            .collect();
        let packed = Packed::of(&shop).bytes();
        assert!(
            packed * 5 <= shop.len() * std::mem::size_of::<Event>(),
            "{packed} bytes for {} events",
            shop.len()
        );

        // through the cache: a partial read appends to what is kept
        let mut c = HistoryCache::new(1 << 20, 10 * MINUTE);
        c.merge(7, None, first.to_vec(), 0);
        let newest = first.iter().map(|e| e.at).max().unwrap();
        assert_eq!(c.read_after(7, newest + 1, 0), Some(newest));
        assert_eq!(c.merge(7, Some(newest), rest.to_vec(), 0).unwrap(), events);
    }
}
