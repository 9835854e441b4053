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

use crate::events::Event;

/// One user's kept history.
struct Kept {
    events: Vec<Event>,
    /// The newest event's `created_at` (microseconds).
    newest: i64,
    /// When the history was last read in full (the caller's clock, microseconds).
    read_in_full_at: i64,
    bytes: usize,
    last_used: u64,
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

/// Approximate heap bytes of an event.
fn event_bytes(e: &Event) -> usize {
    std::mem::size_of::<Event>() + e.command.as_ref().map_or(0, String::capacity)
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
        let (mut all, read_in_full_at) = match (after, self.take(user_id)) {
            (Some(t), Some(k)) if k.newest == t => (k.events, k.read_in_full_at),
            (Some(_), _) => return None,
            (None, _) => (Vec::new(), now),
        };
        all.extend(events);
        let Some(newest) = all.iter().map(|e| e.at).max() else {
            return Some(all);
        };
        let bytes = all.iter().map(event_bytes).sum::<usize>() + std::mem::size_of::<Kept>();
        if bytes <= self.budget / 4 {
            self.bytes += bytes;
            self.kept.insert(
                user_id,
                Kept {
                    events: all.clone(),
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
        let per_user = std::mem::size_of::<Kept>() + 10 * std::mem::size_of::<Event>();
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
}
