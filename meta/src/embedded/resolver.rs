//! Conflict detection: which keys were written at which version in the last five seconds.
//!
//! A transaction that read at version `rv` conflicts when any write committed after `rv`
//! intersects one of its read-conflict ranges. Point writes (`[k, k\0)`, by far the most common)
//! are kept in an ordered map from key to its newest write version, so a read range is checked with
//! one range scan; other write ranges (from `clear_range`) are kept in a list. Entries older than
//! the history window are forgotten, and a transaction whose read version predates what was
//! forgotten can no longer be checked: it fails with `transaction_too_old`, as in FoundationDB.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

/// A key range `[begin, end)`.
pub type KeyRange = (Vec<u8>, Vec<u8>);

pub(super) fn is_point(begin: &[u8], end: &[u8]) -> bool {
    end.len() == begin.len() + 1 && end.ends_with(&[0]) && end.starts_with(begin)
}

/// One committed batch, for expiry: its version, its commit time, the keys it wrote.
type Batch = (i64, Duration, Vec<Rc<[u8]>>);

#[derive(Debug, Default)]
pub struct History {
    /// Newest write version of every point written within the window.
    points: BTreeMap<Rc<[u8]>, i64>,
    /// Non-point write ranges within the window, oldest first.
    ranges: VecDeque<(i64, KeyRange)>,
    /// Batches in commit order, for expiry: version, commit time, the points they wrote.
    log: VecDeque<Batch>,
    /// Writes at or below this version have been forgotten.
    forgotten_through: i64,
}

impl History {
    /// Whether a transaction that read at `read_version` is too old to be checked.
    pub fn too_old(&self, read_version: i64) -> bool {
        read_version < self.forgotten_through
    }

    /// Whether any write after `read_version` intersects one of `reads`.
    pub fn conflicts(&self, read_version: i64, reads: &[KeyRange]) -> bool {
        reads.iter().any(|(b, e)| {
            if b >= e {
                return false;
            }
            self.points
                .range::<[u8], _>((
                    std::ops::Bound::Included(&b[..]),
                    std::ops::Bound::Excluded(&e[..]),
                ))
                .any(|(_, v)| *v > read_version)
                || self.ranges.iter().any(|(v, (rb, re))| *v > read_version && rb < e && b < re)
        })
    }

    /// Records the writes of a batch committed at `version` at time `now`: the single keys it
    /// wrote and its other write ranges. Each key is stored once, shared by the ordered map and the
    /// expiry log.
    pub fn record(
        &mut self,
        version: i64,
        now: Duration,
        keys: impl IntoIterator<Item = impl AsRef<[u8]>>,
        ranges: Vec<KeyRange>,
    ) {
        let mut points = Vec::new();
        let mut add = |k: Rc<[u8]>| {
            self.points.insert(Rc::clone(&k), version);
            points.push(k);
        };
        for k in keys {
            add(Rc::from(k.as_ref()));
        }
        for (b, e) in ranges {
            if is_point(&b, &e) {
                add(Rc::from(b));
            } else {
                self.ranges.push_back((version, (b, e)));
            }
        }
        self.log.push_back((version, now, points));
    }

    /// Forgets batches committed more than `window` before `now`, and those at or below
    /// `oldest_reader`, the oldest read version any transaction still holds: a write at or below
    /// a transaction's read version never conflicts with it, so when every transaction is younger
    /// than a batch, nobody needs that batch any more. Under load this keeps the history a few
    /// batches long instead of five seconds of every written key.
    pub fn expire(&mut self, now: Duration, window: Duration, oldest_reader: i64) {
        while let Some((version, at, _)) = self.log.front() {
            if now.saturating_sub(*at) <= window && *version > oldest_reader {
                break;
            }
            let version = *version;
            if let Some((_, _, points)) = self.log.pop_front() {
                for k in points {
                    if self.points.get(&k) == Some(&version) {
                        self.points.remove(&k);
                    }
                }
            }
            while self.ranges.front().is_some_and(|(v, _)| *v <= version) {
                self.ranges.pop_front();
            }
            self.forgotten_through = version;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(b: &[u8], e: &[u8]) -> KeyRange {
        (b.to_vec(), e.to_vec())
    }

    #[test]
    fn points_and_ranges_conflict_only_after_the_read_version() {
        let mut h = History::default();
        h.record(10, Duration::ZERO, [b"a".to_vec()], vec![r(b"m", b"p")]);
        assert!(h.conflicts(9, &[r(b"a", b"b")]));
        assert!(!h.conflicts(10, &[r(b"a", b"b")]));
        assert!(h.conflicts(5, &[r(b"n", b"n\0")]), "a point read inside a cleared range");
        assert!(!h.conflicts(5, &[r(b"p", b"z")]), "ranges are end-exclusive");
        assert!(!h.conflicts(5, &[r(b"b", b"c")]));
    }

    #[test]
    fn expiry_forgets_and_marks_old_readers() {
        let mut h = History::default();
        h.record(10, Duration::from_secs(0), [] as [&[u8]; 0], vec![r(b"a", b"a\0")]);
        h.record(20, Duration::from_secs(3), [b"b".to_vec()], vec![]);
        h.expire(Duration::from_secs(6), Duration::from_secs(5), 0);
        assert!(!h.conflicts(0, &[r(b"a", b"a\0")]));
        assert!(h.conflicts(15, &[r(b"b", b"b\0")]));
        assert!(h.too_old(9));
        assert!(!h.too_old(10));
    }

    #[test]
    fn batches_no_reader_can_conflict_with_are_forgotten_early() {
        let mut h = History::default();
        h.record(10, Duration::ZERO, [b"a".to_vec()], vec![]);
        h.record(20, Duration::ZERO, [b"b".to_vec()], vec![r(b"m", b"p")]);
        h.record(30, Duration::ZERO, [b"c".to_vec()], vec![]);
        // The oldest reader read at 20: batches 10 and 20 cannot conflict with it, 30 can.
        h.expire(Duration::ZERO, Duration::from_secs(5), 20);
        assert!(h.conflicts(20, &[r(b"c", b"c\0")]));
        assert!(!h.conflicts(0, &[r(b"a", b"a\0")]), "forgotten");
        assert!(!h.conflicts(0, &[r(b"n", b"n\0")]), "the range of batch 20 is forgotten");
        assert_eq!(h.points.len(), 1);
        assert!(!h.too_old(20));
        assert!(h.too_old(19));
    }
}
