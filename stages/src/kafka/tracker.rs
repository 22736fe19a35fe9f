//! Per-partition offset bookkeeping for at-least-once commits.
//!
//! For each assigned partition the tracker keeps the offsets the source has
//! emitted, in emission order, each flagged once its result was produced. The
//! *commit position* of a partition is one past the last offset of the longest
//! fully processed prefix: an offset is never committed while an earlier
//! emitted one is unprocessed, and gaps in the offsets (compaction, transaction
//! markers) do not stall it. Positions only move forward; a commit below the
//! highest position ever committed for a partition is never issued.
//!
//! Every assignment of a partition gets a new *epoch*; marks carrying an old
//! epoch (records emitted before a revocation) are ignored, since the new
//! owner of the partition will process those records again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic-partition.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

#[derive(Debug)]
struct PartitionState {
    epoch: u64,
    /// Emitted offsets in order, with their processed flag.
    entries: VecDeque<(i64, bool)>,
    /// One past the last offset of the processed prefix (next offset to commit).
    position: Option<i64>,
    /// The first offset emitted in this epoch (where the epoch started reading).
    first: Option<i64>,
    /// After [`OffsetTracker::rewind`]: records above this offset still come
    /// from before the consumer was repositioned, and keep this stale epoch.
    rewound: Option<(u64, i64)>,
}

/// Counters of the tracker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerCounts {
    /// Offsets emitted by the source.
    pub emitted: u64,
    /// Offsets marked processed.
    pub marked: u64,
    /// Marks ignored because their partition was revoked since emission.
    pub stale_marks: u64,
}

/// A map looked up for every record (twice: emitted, marked): hashing a
/// partition with std's SipHash cost ~3 % of the wine server's instructions.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Offset bookkeeping shared by a consumer source and its committer.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: FastMap<TopicPartition, PartitionState>,
    /// Highest position ever committed per partition (survives revocation).
    committed: FastMap<TopicPartition, i64>,
    next_epoch: u64,
    counts: TrackerCounts,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking `tp` (a new assignment) and returns its epoch. If it is
    /// already tracked (an incremental re-assignment), keeps its state.
    pub fn assign(&mut self, tp: &TopicPartition) -> u64 {
        if let Some(s) = self.parts.get(tp) {
            return s.epoch;
        }
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.parts.insert(
            tp.clone(),
            PartitionState {
                epoch,
                entries: VecDeque::new(),
                position: None,
                first: None,
                rewound: None,
            },
        );
        epoch
    }

    /// Stops tracking `tp`; returns the position that may still be committed
    /// for it (above what was committed), if any. Unprocessed records are
    /// dropped: they will be consumed again by the partition's next owner.
    pub fn revoke(&mut self, tp: &TopicPartition) -> Option<i64> {
        let state = self.parts.remove(tp)?;
        let pos = state.position?;
        match self.committed.get(tp) {
            Some(&c) if c >= pos => None,
            _ => Some(pos),
        }
    }

    /// Starts `tp` over from its last committed position, for a consumer
    /// about to be repositioned there (an aborted transaction's records must
    /// be read again): a new epoch, so marks of records emitted so far are
    /// stale. Returns the position to read from: the highest committed one,
    /// but never below where this assignment started reading. Until a record
    /// at or below the highest offset emitted so far arrives (the first one
    /// read after the reposition), records above it were read before the
    /// reposition and get the old epoch. `None` if `tp` is not tracked or
    /// nothing was emitted.
    pub fn rewind(&mut self, tp: &TopicPartition) -> Option<i64> {
        let committed = self.committed.get(tp).copied();
        let s = self.parts.get_mut(tp)?;
        let highest = s
            .entries
            .back()
            .map(|&(o, _)| o)
            .or(s.position.map(|p| p - 1))?;
        let first = s.first?;
        let from = committed.map_or(first, |c| c.max(first));
        self.next_epoch += 1;
        let stale = std::mem::replace(&mut s.epoch, self.next_epoch);
        s.entries.clear();
        s.position = None;
        s.first = None;
        s.rewound = Some((stale, highest));
        Some(from)
    }

    /// The partitions tracked now.
    pub fn assigned(&self) -> Vec<TopicPartition> {
        let mut v: Vec<_> = self.parts.keys().cloned().collect();
        v.sort();
        v
    }

    /// Records that the source emitted `offset` of `tp`; returns its epoch
    /// (assigning the partition if it was not tracked yet).
    pub fn emitted(&mut self, tp: &TopicPartition, offset: i64) -> u64 {
        self.counts.emitted += 1;
        // One lookup for a tracked partition (every record but the first).
        if let Some(s) = self.parts.get_mut(tp) {
            if let Some((stale, above)) = s.rewound {
                if offset > above {
                    // Read before the consumer was repositioned: its mark will
                    // be stale, and the record comes again.
                    return stale;
                }
                s.rewound = None;
            }
            // Offsets of one assignment arrive in increasing order; a lower one
            // means the consumer was repositioned: restart the bookkeeping.
            if s.entries.back().is_some_and(|&(last, _)| offset <= last) {
                s.entries.clear();
                s.position = None;
            }
            s.first.get_or_insert(offset);
            s.entries.push_back((offset, false));
            return s.epoch;
        }
        let epoch = self.assign(tp);
        if let Some(s) = self.parts.get_mut(tp) {
            s.first = Some(offset);
            s.entries.push_back((offset, false));
        }
        epoch
    }

    /// Marks `offset` of `tp` (emitted in `epoch`) processed. Returns false if
    /// the mark is stale (the partition was revoked since) or unknown.
    pub fn mark(&mut self, tp: &TopicPartition, epoch: u64, offset: i64) -> bool {
        let Some(s) = self.parts.get_mut(tp) else {
            self.counts.stale_marks += 1;
            return false;
        };
        if s.epoch != epoch {
            self.counts.stale_marks += 1;
            return false;
        }
        let Ok(i) = s.entries.binary_search_by_key(&offset, |&(o, _)| o) else {
            self.counts.stale_marks += 1;
            return false;
        };
        s.entries[i].1 = true;
        while let Some(&(o, true)) = s.entries.front() {
            s.entries.pop_front();
            s.position = Some(o + 1);
        }
        self.counts.marked += 1;
        true
    }

    /// Positions to commit now: per partition, the commit position if it is
    /// above the highest one committed.
    pub fn pending_commits(&self) -> BTreeMap<TopicPartition, i64> {
        self.parts
            .iter()
            .filter_map(|(tp, s)| {
                let pos = s.position?;
                match self.committed.get(tp) {
                    Some(&c) if c >= pos => None,
                    _ => Some((tp.clone(), pos)),
                }
            })
            .collect()
    }

    /// Records a successful commit of `position` for `tp` (keeps the maximum).
    pub fn committed(&mut self, tp: &TopicPartition, position: i64) {
        let e = self.committed.entry(tp.clone()).or_insert(position);
        *e = (*e).max(position);
    }

    /// The highest position committed for `tp` by this tracker.
    pub fn committed_position(&self, tp: &TopicPartition) -> Option<i64> {
        self.committed.get(tp).copied()
    }

    /// Whether a record of `tp` emitted before `offset` in `epoch` is still
    /// unprocessed (marking `offset` now would leave a gap below it).
    pub fn unprocessed_before(&self, tp: &TopicPartition, epoch: u64, offset: i64) -> bool {
        self.parts.get(tp).is_some_and(|s| {
            s.epoch == epoch && s.entries.front().is_some_and(|&(o, _)| o < offset)
        })
    }

    /// Whether some partition has a processed record above an unprocessed one
    /// (its processed records are not all in the committable prefix).
    pub fn has_gaps(&self) -> bool {
        self.parts
            .values()
            .any(|s| s.entries.iter().any(|&(_, done)| done))
    }

    /// Records emitted and not yet processed, over all tracked partitions.
    pub fn in_flight(&self) -> usize {
        self.parts
            .values()
            .map(|s| s.entries.iter().filter(|(_, done)| !done).count())
            .sum()
    }

    /// The counters.
    pub fn counts(&self) -> TrackerCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn commits_only_the_processed_prefix() {
        let mut t = OffsetTracker::new();
        let e = t.assign(&tp(0));
        for o in [10, 11, 12, 15, 16] {
            assert_eq!(t.emitted(&tp(0), o), e);
        }
        assert!(t.pending_commits().is_empty());
        assert!(t.mark(&tp(0), e, 12));
        assert!(t.mark(&tp(0), e, 15));
        assert!(t.pending_commits().is_empty(), "10 is unprocessed");
        assert!(t.mark(&tp(0), e, 10));
        assert_eq!(t.pending_commits().get(&tp(0)), Some(&11));
        assert!(t.mark(&tp(0), e, 11));
        // 11, 12 and 15 done; the gap 13-14 (compaction) does not stall it.
        assert_eq!(t.pending_commits().get(&tp(0)), Some(&16));
        assert_eq!(t.in_flight(), 1);
    }

    #[test]
    fn never_goes_backwards() {
        let mut t = OffsetTracker::new();
        let e = t.assign(&tp(0));
        t.emitted(&tp(0), 0);
        t.emitted(&tp(0), 1);
        t.mark(&tp(0), e, 0);
        t.mark(&tp(0), e, 1);
        t.committed(&tp(0), 2);
        t.committed(&tp(0), 1);
        assert_eq!(t.committed_position(&tp(0)), Some(2));
        assert!(t.pending_commits().is_empty());
        // Re-delivery after a reposition below the committed position.
        t.emitted(&tp(0), 1);
        t.mark(&tp(0), e, 1);
        assert!(t.pending_commits().is_empty(), "position 2 <= committed 2");
    }

    #[test]
    fn stale_marks_after_revocation_are_ignored() {
        let mut t = OffsetTracker::new();
        let e1 = t.assign(&tp(1));
        t.emitted(&tp(1), 5);
        t.emitted(&tp(1), 6);
        t.mark(&tp(1), e1, 5);
        assert_eq!(t.revoke(&tp(1)), Some(6), "only the processed prefix");
        let e2 = t.assign(&tp(1));
        assert_ne!(e1, e2);
        t.emitted(&tp(1), 6);
        assert!(!t.mark(&tp(1), e1, 6), "old epoch");
        assert!(t.pending_commits().is_empty());
        assert!(t.mark(&tp(1), e2, 6));
        assert_eq!(t.pending_commits().get(&tp(1)), Some(&7));
        assert_eq!(t.counts().stale_marks, 1);
    }

    #[test]
    fn a_rewound_partition_starts_a_new_epoch_at_its_committed_position() {
        let mut t = OffsetTracker::new();
        let e1 = t.assign(&tp(3));
        for o in 10..=14 {
            t.emitted(&tp(3), o);
        }
        for o in 10..=12 {
            t.mark(&tp(3), e1, o);
        }
        t.committed(&tp(3), 12);
        // Read from the committed position (12), not from the assignment's
        // start (10) nor the processed prefix (13).
        assert_eq!(t.rewind(&tp(3)), Some(12));
        // 15 was read before the reposition: the old epoch, so its mark is stale.
        assert_eq!(t.emitted(&tp(3), 15), e1);
        assert!(!t.mark(&tp(3), e1, 15));
        assert!(!t.mark(&tp(3), e1, 13), "a mark of the aborted records");
        // 12 is read again: a new epoch, and the bookkeeping restarts there.
        let e2 = t.emitted(&tp(3), 12);
        assert_ne!(e2, e1);
        assert_eq!(t.emitted(&tp(3), 13), e2);
        assert!(t.mark(&tp(3), e2, 12));
        assert!(t.mark(&tp(3), e2, 13));
        assert_eq!(t.pending_commits().get(&tp(3)), Some(&14));
        // Nothing committed since the assignment began: from its first offset;
        // an older commit (of an earlier assignment) is below it.
        let mut t = OffsetTracker::new();
        t.committed(&tp(4), 3);
        t.assign(&tp(4));
        t.emitted(&tp(4), 8);
        t.emitted(&tp(4), 9);
        assert_eq!(t.rewind(&tp(4)), Some(8));
        assert_eq!(t.rewind(&tp(5)), None, "not tracked");
    }

    #[test]
    fn revoke_without_progress_commits_nothing() {
        let mut t = OffsetTracker::new();
        t.assign(&tp(2));
        t.emitted(&tp(2), 0);
        assert_eq!(t.revoke(&tp(2)), None);
        assert_eq!(t.revoke(&tp(2)), None);
    }
}
