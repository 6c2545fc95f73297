//! Leader side of snapshot transfers: which chunk of which snapshot goes to
//! which follower, and when.
//!
//! Per follower, a window of chunks is in flight between the offset the
//! follower last confirmed (`acked`) and the next offset to send (`next`),
//! so memory stays bounded whatever the snapshot's size. Every (re)start
//! begins with a probe, an empty chunk at `acked`, whose answer is the
//! follower's own offset: a follower that already holds a prefix of the
//! same snapshot (it keeps its partial file across dropped connections) is
//! resumed there, never from 0. A response that repeats an offset while
//! more was sent means a chunk was lost: sending goes back to that offset
//! (once per offset: the chunks already in flight behind the lost one
//! produce the same answer). No answer within `resend_ticks`, or an
//! unreachable report from the host, falls back to probing.
//!
//! The follower answers the last chunk only once the snapshot is verified
//! and installed: an answer naming the whole length means installed.
//!
//! This module decides offsets only; the driver reads the chunks from the
//! snapshot file (`S`, the source, is whatever it needs for that) and turns
//! them into messages.

use crate::core::{Index, NodeId};
use std::collections::BTreeMap;

/// One chunk to send: `len` bytes at `offset` of the snapshot in the
/// transfer to `peer` (an empty chunk is a probe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkToSend {
    pub(crate) peer: NodeId,
    pub(crate) offset: u64,
    pub(crate) len: usize,
}

/// What an answer from a follower ended, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Not about a transfer under way (a late answer, another snapshot).
    Ignored,
    /// The transfer goes on.
    Progress,
    /// The follower installed the snapshot.
    Installed,
    /// The follower refused the snapshot.
    Rejected,
}

/// Numbers about a finished transfer, for the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TransferStats {
    pub(crate) total_len: u64,
    /// Bytes of chunk data sent, resends included.
    pub(crate) bytes_sent: u64,
    /// Times sending went back to an earlier offset.
    pub(crate) rewinds: u64,
    /// The offset the follower resumed at after the first probe, when it
    /// already held part of the snapshot.
    pub(crate) resumed_at: u64,
}

struct Transfer<S> {
    index: Index,
    total_len: u64,
    source: S,
    /// The offset the follower expects, as it last said.
    acked: u64,
    /// The next offset to send.
    next: u64,
    /// Waiting for an answer to a probe before streaming.
    probing: bool,
    probe_sent: bool,
    /// Ticks since the last answer.
    idle_ticks: u32,
    /// The offset sending last went back to (a lost chunk): later answers
    /// naming it come from chunks sent before the rewind.
    rewound_at: Option<u64>,
    stats: TransferStats,
    answered: bool,
}

pub(crate) struct SnapshotSender<S> {
    chunk_size: u64,
    window_chunks: u64,
    resend_ticks: u32,
    transfers: BTreeMap<NodeId, Transfer<S>>,
}

impl<S> SnapshotSender<S> {
    pub(crate) fn new(chunk_size: u64, window_chunks: u64, resend_ticks: u32) -> SnapshotSender<S> {
        SnapshotSender {
            chunk_size: chunk_size.max(1),
            window_chunks: window_chunks.max(1),
            resend_ticks: resend_ticks.max(1),
            transfers: BTreeMap::new(),
        }
    }

    /// Starts sending the snapshot at `index` (`total_len` bytes, read
    /// through `source`) to `peer`. Asked again for the snapshot already on
    /// its way, the transfer keeps its place and probes from there;
    /// another snapshot replaces it.
    pub(crate) fn start(&mut self, peer: NodeId, index: Index, total_len: u64, source: S) {
        if let Some(t) = self.transfers.get_mut(&peer) {
            if (t.index, t.total_len) == (index, total_len) {
                t.source = source;
                t.start_probing();
                return;
            }
        }
        let mut transfer = Transfer {
            index,
            total_len,
            source,
            acked: 0,
            next: 0,
            probing: true,
            probe_sent: false,
            idle_ticks: 0,
            rewound_at: None,
            stats: TransferStats {
                total_len,
                ..TransferStats::default()
            },
            answered: false,
        };
        transfer.start_probing();
        self.transfers.insert(peer, transfer);
    }

    pub(crate) fn source(&self, peer: NodeId) -> Option<&S> {
        self.transfers.get(&peer).map(|t| &t.source)
    }

    /// The index of the snapshot on its way to `peer`.
    pub(crate) fn index(&self, peer: NodeId) -> Option<Index> {
        self.transfers.get(&peer).map(|t| t.index)
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.transfers.is_empty()
    }

    pub(crate) fn peers(&self) -> Vec<NodeId> {
        self.transfers.keys().copied().collect()
    }

    /// Ends the transfer to `peer`, if any.
    pub(crate) fn remove(&mut self, peer: NodeId) -> Option<TransferStats> {
        self.transfers.remove(&peer).map(|t| t.stats)
    }

    /// Ends every transfer of a snapshot older than `index` (a newer one
    /// replaces it); returns their peers.
    pub(crate) fn supersede(&mut self, index: Index) -> Vec<NodeId> {
        let old: Vec<NodeId> = self
            .transfers
            .iter()
            .filter(|(_, t)| t.index < index)
            .map(|(&peer, _)| peer)
            .collect();
        for peer in &old {
            self.transfers.remove(peer);
        }
        old
    }

    /// A follower's answer to a chunk of the snapshot at `index`.
    pub(crate) fn on_answer(
        &mut self,
        peer: NodeId,
        index: Index,
        next_offset: u64,
        reject: bool,
    ) -> (Answer, TransferStats) {
        let Some(t) = self.transfers.get_mut(&peer) else {
            return (Answer::Ignored, TransferStats::default());
        };
        if t.index != index || next_offset > t.total_len {
            return (Answer::Ignored, t.stats);
        }
        let stats = t.stats;
        if reject {
            self.transfers.remove(&peer);
            return (Answer::Rejected, stats);
        }
        if next_offset == t.total_len {
            self.transfers.remove(&peer);
            return (Answer::Installed, stats);
        }
        t.idle_ticks = 0;
        if !t.answered {
            t.answered = true;
            t.stats.resumed_at = next_offset;
        }
        if t.probing {
            // The follower's offset, whatever this node thought.
            t.probing = false;
            t.acked = next_offset;
            t.next = next_offset;
            t.rewound_at = None;
        } else if next_offset > t.acked {
            t.acked = next_offset;
            t.next = t.next.max(next_offset);
            t.rewound_at = None;
        } else if next_offset < t.acked {
            // The follower holds less than it said (it lost its partial
            // file, say after a restart): continue from what it holds.
            t.acked = next_offset;
            t.rewind(next_offset);
        } else if t.next > next_offset && t.rewound_at != Some(next_offset) {
            // A chunk after the acknowledged offset was lost.
            t.rewind(next_offset);
        }
        (Answer::Progress, t.stats)
    }

    /// One tick: transfers with no answer for `resend_ticks` go back to
    /// probing (a lost chunk, a lost answer, a follower still verifying).
    pub(crate) fn tick(&mut self) {
        for t in self.transfers.values_mut() {
            t.idle_ticks += 1;
            if t.idle_ticks >= self.resend_ticks {
                t.idle_ticks = 0;
                t.start_probing();
            }
        }
    }

    /// The host could not reach `peer`: what was in flight is lost; probe
    /// until it answers again.
    pub(crate) fn unreachable(&mut self, peer: NodeId) {
        if let Some(t) = self.transfers.get_mut(&peer) {
            t.start_probing();
        }
    }

    /// The chunks to send now: a probe where one is due, otherwise chunks
    /// from `next` as far as the window allows.
    pub(crate) fn poll(&mut self) -> Vec<ChunkToSend> {
        let window_bytes = self.window_chunks * self.chunk_size;
        let mut out = Vec::new();
        for (&peer, t) in self.transfers.iter_mut() {
            if t.probing {
                if !t.probe_sent {
                    t.probe_sent = true;
                    out.push(ChunkToSend {
                        peer,
                        offset: t.acked,
                        len: 0,
                    });
                }
                continue;
            }
            while t.next < t.total_len && t.next - t.acked < window_bytes {
                let len = self.chunk_size.min(t.total_len - t.next);
                out.push(ChunkToSend {
                    peer,
                    offset: t.next,
                    len: len as usize,
                });
                t.next += len;
                t.stats.bytes_sent += len;
            }
        }
        out
    }
}

impl<S> Transfer<S> {
    fn start_probing(&mut self) {
        self.probing = true;
        self.probe_sent = false;
        self.next = self.acked;
    }

    fn rewind(&mut self, offset: u64) {
        self.next = offset;
        self.rewound_at = Some(offset);
        self.stats.rewinds += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 10;

    fn sender() -> SnapshotSender<()> {
        SnapshotSender::new(CHUNK, 3, 4)
    }

    fn offsets(chunks: &[ChunkToSend]) -> Vec<(u64, usize)> {
        chunks.iter().map(|c| (c.offset, c.len)).collect()
    }

    /// A follower that takes chunks in order only, as the receiver does;
    /// returns its answer (None while it verifies the complete snapshot).
    fn follower(held: &mut u64, total: u64, chunk: ChunkToSend) -> Option<u64> {
        if chunk.offset == *held {
            *held += chunk.len as u64;
            if *held == total && chunk.len > 0 {
                return None;
            }
        }
        Some(*held)
    }

    #[test]
    fn a_transfer_probes_then_streams_within_its_window() {
        let mut s = sender();
        s.start(2, 7, 45, ());
        assert_eq!(offsets(&s.poll()), vec![(0, 0)], "a probe first");
        assert!(s.poll().is_empty(), "one probe at a time");
        assert_eq!(s.on_answer(2, 7, 0, false).0, Answer::Progress);
        assert_eq!(offsets(&s.poll()), vec![(0, 10), (10, 10), (20, 10)]);
        assert!(s.poll().is_empty(), "the window is full");
        s.on_answer(2, 7, 10, false);
        assert_eq!(offsets(&s.poll()), vec![(30, 10)]);
        s.on_answer(2, 7, 20, false);
        s.on_answer(2, 7, 30, false);
        assert_eq!(offsets(&s.poll()), vec![(40, 5)], "a short last chunk");
        s.on_answer(2, 7, 40, false);
        assert!(s.poll().is_empty());
        let (answer, stats) = s.on_answer(2, 7, 45, false);
        assert_eq!(answer, Answer::Installed);
        assert_eq!(stats.bytes_sent, 45);
        assert!(s.peers().is_empty());
    }

    #[test]
    fn a_follower_holding_a_prefix_is_resumed_there() {
        let mut s = sender();
        s.start(2, 7, 100, ());
        s.poll();
        s.on_answer(2, 7, 60, false);
        assert_eq!(offsets(&s.poll()), vec![(60, 10), (70, 10), (80, 10)]);
        // Asked again for the same snapshot (the leader probed the
        // follower anew): the place is kept and confirmed by a probe.
        s.on_answer(2, 7, 70, false);
        s.start(2, 7, 100, ());
        assert_eq!(offsets(&s.poll()), vec![(70, 0)]);
        // A follower that lost its partial file says so, and is sent what
        // it lacks.
        s.on_answer(2, 7, 0, false);
        assert_eq!(offsets(&s.poll()), vec![(0, 10), (10, 10), (20, 10)]);
    }

    #[test]
    fn a_lost_chunk_is_sent_again_once() {
        let mut s = sender();
        s.start(2, 7, 100, ());
        s.poll();
        s.on_answer(2, 7, 0, false);
        assert_eq!(offsets(&s.poll()), vec![(0, 10), (10, 10), (20, 10)]);
        // The chunk at 0 was lost: the ones at 10 and 20 are gaps, each
        // answered with 0.
        s.on_answer(2, 7, 0, false);
        assert_eq!(offsets(&s.poll()), vec![(0, 10), (10, 10), (20, 10)]);
        s.on_answer(2, 7, 0, false);
        assert!(s.poll().is_empty(), "the second gap answer changes nothing");
        s.on_answer(2, 7, 10, false);
        assert_eq!(offsets(&s.poll()), vec![(30, 10)]);
    }

    #[test]
    fn silence_and_unreachable_peers_fall_back_to_probing() {
        let mut s = sender();
        s.start(2, 7, 100, ());
        s.poll();
        s.on_answer(2, 7, 0, false);
        s.poll();
        s.on_answer(2, 7, 10, false);
        assert_eq!(offsets(&s.poll()), vec![(30, 10)], "the window refills");
        for _ in 0..3 {
            s.tick();
        }
        assert!(s.poll().is_empty(), "not yet");
        s.tick();
        assert_eq!(offsets(&s.poll()), vec![(10, 0)], "no answer: probe");
        s.on_answer(2, 7, 30, false);
        assert_eq!(offsets(&s.poll()), vec![(30, 10), (40, 10), (50, 10)]);
        s.unreachable(2);
        assert_eq!(offsets(&s.poll()), vec![(30, 0)]);
        for _ in 0..4 {
            s.tick();
        }
        assert_eq!(offsets(&s.poll()), vec![(30, 0)], "probing goes on");
    }

    #[test]
    fn refusals_late_answers_and_newer_snapshots() {
        let mut s = sender();
        s.start(2, 7, 100, ());
        s.start(3, 7, 100, ());
        assert_eq!(s.on_answer(2, 6, 10, false).0, Answer::Ignored);
        assert_eq!(s.on_answer(4, 7, 10, false).0, Answer::Ignored);
        assert_eq!(s.on_answer(2, 7, 500, false).0, Answer::Ignored);
        assert_eq!(s.on_answer(2, 7, 0, true).0, Answer::Rejected);
        assert_eq!(s.peers(), vec![3]);
        s.start(3, 9, 50, ());
        assert_eq!(
            s.index(3),
            Some(9),
            "another snapshot replaces the transfer"
        );
        assert_eq!(offsets(&s.poll()), vec![(0, 0)]);
        assert_eq!(s.supersede(10), vec![3]);
        assert!(s.peers().is_empty());
    }

    /// Against a follower that takes chunks in order only, over a link that
    /// loses messages for a while and then comes back: every byte arrives,
    /// the transfer ends installed, and the bytes sent stay close to the
    /// snapshot's size (resumed, not restarted).
    #[test]
    fn a_lossy_link_costs_only_what_was_lost() {
        let total = 1_000;
        let mut s = sender();
        s.start(2, 7, total, ());
        let mut held = 0;
        let mut installed = false;
        let mut sent = 0;
        for round in 0..1_000 {
            let lossy = (20..40).contains(&round);
            if lossy && round == 20 {
                s.unreachable(2);
            }
            for chunk in s.poll() {
                if lossy {
                    continue;
                }
                match follower(&mut held, total, chunk) {
                    Some(offset) => {
                        s.on_answer(2, 7, offset, false);
                    }
                    None => {
                        let (answer, stats) = s.on_answer(2, 7, total, false);
                        assert_eq!(answer, Answer::Installed);
                        sent = stats.bytes_sent;
                        installed = true;
                    }
                }
            }
            if installed {
                break;
            }
            s.tick();
        }
        assert!(installed);
        assert_eq!(held, total);
        // What the window had in flight when the link failed is sent twice.
        assert!(
            sent >= total && sent <= total + 3 * CHUNK,
            "{sent} bytes sent"
        );
    }
}
