//! Per-follower replication progress and flow control, as the leader sees
//! it.
//!
//! A follower is either probed (one append at a time until the match point
//! is found) or replicated to (appends streamed optimistically, bounded by
//! an in-flight window counted in messages and in bytes).

use super::types::Index;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    Probe,
    Replicate,
    /// The follower needs the snapshot through `pending`; appends wait
    /// until it has installed it.
    Snapshot {
        pending: Index,
    },
}

/// Appends sent but not yet acknowledged: `(last index, bytes)` per message.
#[derive(Clone, Debug)]
pub(crate) struct Inflights {
    window: VecDeque<(Index, u64)>,
    bytes: u64,
    max_msgs: usize,
    max_bytes: u64,
}

impl Inflights {
    pub(crate) fn new(max_msgs: usize, max_bytes: u64) -> Inflights {
        Inflights {
            window: VecDeque::new(),
            bytes: 0,
            max_msgs,
            max_bytes,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.window.len() >= self.max_msgs || self.bytes >= self.max_bytes
    }

    pub(crate) fn add(&mut self, last_index: Index, bytes: u64) {
        self.window.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Forgets every message whose entries are all at or below `index`.
    pub(crate) fn free_to(&mut self, index: Index) {
        while let Some(&(last, bytes)) = self.window.front() {
            if last > index {
                break;
            }
            self.window.pop_front();
            self.bytes -= bytes;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.window.len()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Highest index known to be replicated on the follower.
    pub(crate) matched: Index,
    /// Next index to send.
    pub(crate) next: Index,
    pub(crate) state: ProgressState,
    /// In probe state: an append is outstanding, wait for its answer (or a
    /// heartbeat response) before sending another.
    pub(crate) probe_sent: bool,
    pub(crate) inflights: Inflights,
    /// Heard from during the current check-quorum period.
    pub(crate) recent_active: bool,
    /// The highest commit index this follower can have learned from us.
    pub(crate) sent_commit: Index,
}

impl Progress {
    pub(crate) fn new(next: Index, max_msgs: usize, max_bytes: u64) -> Progress {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_msgs, max_bytes),
            recent_active: false,
            sent_commit: 0,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflights.clear();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflights.clear();
    }

    /// True when telling the follower `committed` could advance its commit
    /// index: it has not been told, and its log reaches further than what it
    /// was told (a follower commits only entries it holds).
    pub(crate) fn can_bump_commit(&self, committed: Index) -> bool {
        self.sent_commit < committed && self.sent_commit < self.next - 1
    }

    pub(crate) fn become_snapshot(&mut self, pending: Index) {
        self.state = ProgressState::Snapshot { pending };
        self.probe_sent = false;
        self.inflights.clear();
    }

    /// True when no append may be sent now.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Records an append whose entries end at `last_index` (`bytes` of
    /// entries; an empty append carries none).
    pub(crate) fn sent_append(&mut self, last_index: Index, bytes: u64, entry_count: usize) {
        match self.state {
            ProgressState::Replicate => {
                if entry_count > 0 {
                    self.next = last_index + 1;
                    self.inflights.add(last_index, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// The follower acknowledged everything through `index`. Returns true
    /// when this moved the match point.
    pub(crate) fn acknowledge(&mut self, index: Index) -> bool {
        self.probe_sent = false;
        if index <= self.matched {
            return false;
        }
        self.matched = index;
        self.next = self.next.max(index + 1);
        self.inflights.free_to(index);
        true
    }

    /// The follower refused an append after `rejected` and suggests
    /// continuing at `next_probe`. Returns false for a stale refusal.
    pub(crate) fn refuse(&mut self, rejected: Index, next_probe: Index) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.matched {
                    return false;
                }
                self.become_probe();
                self.next = next_probe.clamp(self.matched + 1, rejected.max(self.matched + 1));
                true
            }
            ProgressState::Probe => {
                if rejected + 1 != self.next {
                    return false;
                }
                self.next = next_probe.clamp(self.matched + 1, rejected.max(self.matched + 1));
                self.probe_sent = false;
                true
            }
            // Only the snapshot's installation moves this follower on.
            ProgressState::Snapshot { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_limits_messages_and_bytes() {
        let mut inflights = Inflights::new(2, 100);
        inflights.add(5, 10);
        assert!(!inflights.is_full());
        inflights.add(9, 10);
        assert!(inflights.is_full());
        inflights.free_to(5);
        assert!(!inflights.is_full());
        inflights.add(10, 200);
        assert!(inflights.is_full());
        inflights.free_to(10);
        assert_eq!(inflights.len(), 0);
    }

    #[test]
    fn stale_refusals_are_ignored() {
        let mut p = Progress::new(11, 8, 1 << 20);
        p.sent_append(10, 0, 0);
        assert!(p.is_paused());
        assert!(!p.refuse(7, 5), "refusal of an append not in flight");
        assert!(p.refuse(10, 4));
        assert_eq!(p.next, 4);
        assert!(!p.is_paused());
        assert!(p.acknowledge(6));
        p.become_replicate();
        p.sent_append(9, 30, 3);
        assert_eq!(p.next, 10);
        assert!(!p.refuse(6, 2), "at or below the match point");
    }
}
