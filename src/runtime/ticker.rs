//! Which groups a tick reaches. The host ticks the whole runtime with one
//! call ([`super::Runtime::tick`]); a walk over every group on each tick
//! would cost ten thousand quiet groups more than all else they do. So
//! the ticker keeps the awake groups on a list that every tick walks, and
//! the quiet ones (see `Raft::quiet_ticks_allowed`) ordered by the tick at
//! which they are due: a tick reaches the awake groups and the quiet ones
//! whose due tick has come, and no other.
//!
//! Reaching a group queues one tick marker in its mailbox, however many
//! ticks pass before its next round. The round takes every tick since the
//! last it was given (the runtime's clock minus the group's), so a group
//! gets each tick exactly once whether it was reached on every tick or
//! skipped for a whole check-in period. After each round the group is
//! placed again, by what it says it can go without.

use super::{GroupId, Slot};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// `GroupTicks::due` of a group ticked on every tick.
const AWAKE: u64 = 0;
/// `GroupTicks::due` of a group the ticker does not hold: quiet and
/// reached, until its round places it again, or stopped.
const UNPLACED: u64 = u64::MAX;

/// A group's ticks and where the ticker holds it.
pub(super) struct GroupTicks {
    /// The runtime tick through which the group has been given its ticks.
    given: AtomicU64,
    /// A tick marker waits in the group's mailbox: the ticks reaching the
    /// group before its round queue no other.
    queued: AtomicBool,
    /// The tick at which the quiet group is due, [`AWAKE`] or
    /// [`UNPLACED`]. Changed under the ticker's lock; read without it by
    /// the group's own rounds.
    due: AtomicU64,
    /// On the awake list; the next tick drops it there if it is no longer
    /// awake (a quiet group leaves the list without a search).
    listed: AtomicBool,
}

impl GroupTicks {
    /// Whether the group was quiet after its last round.
    pub(super) fn quiet(&self) -> bool {
        self.due.load(Ordering::Relaxed) != AWAKE
    }
}

/// Places the runtime's groups for its ticks and counts the ticks.
pub(super) struct Ticker {
    /// Ticks since the runtime opened.
    now: AtomicU64,
    schedule: Mutex<Schedule>,
}

#[derive(Default)]
struct Schedule {
    /// Groups reached on every tick (and, until the next tick, some that
    /// went quiet or stopped since).
    awake: Vec<Arc<Slot>>,
    /// Quiet groups by the tick they are due at.
    quiet: BTreeMap<(u64, GroupId), Arc<Slot>>,
}

/// What one tick reached.
pub(super) struct Tick {
    /// The tick's number since the runtime opened.
    pub(super) now: u64,
    /// Groups reached.
    pub(super) reached: u64,
    /// Groups reached with no tick marker in their mailbox yet: each gets
    /// one.
    pub(super) to_mark: Vec<Arc<Slot>>,
}

impl Ticker {
    pub(super) fn new() -> Ticker {
        Ticker {
            now: AtomicU64::new(0),
            schedule: Mutex::new(Schedule::default()),
        }
    }

    /// The ticks of a group starting now: owed none, and not placed until
    /// [`Ticker::start`].
    pub(super) fn group_ticks(&self) -> GroupTicks {
        GroupTicks {
            given: AtomicU64::new(self.now.load(Ordering::SeqCst)),
            queued: AtomicBool::new(false),
            due: AtomicU64::new(UNPLACED),
            listed: AtomicBool::new(false),
        }
    }

    /// A group starts awake: reached on every tick until a round of it
    /// says it is quiet.
    pub(super) fn start(&self, slot: &Arc<Slot>) {
        self.schedule.lock().wake(slot);
    }

    /// A stopped group is reached by no later tick. Called once no round
    /// of the group runs, so none places it again.
    pub(super) fn stop(&self, slot: &Slot) {
        self.schedule.lock().unplace(slot);
    }

    /// Counts a tick and finds the groups it reaches.
    pub(super) fn tick(&self) -> Tick {
        // SeqCst with the marker's swap below and its clear in `take`:
        // either a round takes this tick, or this tick finds the marker
        // cleared and queues a new one (otherwise the group could wait a
        // tick for a tick it was owed).
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        let mut reached = 0;
        let mut to_mark = Vec::new();
        let mut reach = |slot: &Arc<Slot>| {
            reached += 1;
            if !slot.ticks.queued.swap(true, Ordering::SeqCst) {
                to_mark.push(slot.clone());
            }
        };
        let mut schedule = self.schedule.lock();
        schedule.awake.retain(|slot| {
            let ticks = &slot.ticks;
            if ticks.due.load(Ordering::Relaxed) != AWAKE {
                ticks.listed.store(false, Ordering::Relaxed);
                return false;
            }
            reach(slot);
            true
        });
        while let Some(entry) = schedule.quiet.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let slot = entry.remove();
            // Off the ticker until its round, which the marker (this one
            // or one already queued) brings, places it again.
            slot.ticks.due.store(UNPLACED, Ordering::Relaxed);
            reach(&slot);
        }
        Tick {
            now,
            reached,
            to_mark,
        }
    }

    /// The ticks the group is owed, now given: those since it was last
    /// given any. Called by the group's round (one at a time).
    pub(super) fn take(&self, slot: &Slot) -> u32 {
        let ticks = &slot.ticks;
        // Cleared first: a tick counted after the clock's read below
        // queues a new marker rather than waiting for the one after it.
        ticks.queued.store(false, Ordering::SeqCst);
        let now = self.now.load(Ordering::SeqCst);
        let given = ticks.given.swap(now, Ordering::Relaxed);
        // Four billion ticks are years of ticking without a round.
        u32::try_from(now.saturating_sub(given)).unwrap_or(u32::MAX)
    }

    /// Places a group after its round: awake when it can go without no
    /// tick (`allowance` 0), else due `allowance` ticks after the last it
    /// was given. Called by the round, which holds the group.
    pub(super) fn place(&self, slot: &Arc<Slot>, allowance: u32) {
        let ticks = &slot.ticks;
        // An awake group staying awake, the common case of a busy group,
        // takes no lock: only its rounds move an awake group.
        if allowance == 0 && ticks.due.load(Ordering::Relaxed) == AWAKE {
            return;
        }
        let due = match allowance {
            0 => AWAKE,
            n => ticks.given.load(Ordering::Relaxed) + u64::from(n),
        };
        let mut schedule = self.schedule.lock();
        if ticks.due.load(Ordering::Relaxed) == due {
            return;
        }
        schedule.unplace(slot);
        if due == AWAKE {
            schedule.wake(slot);
        } else {
            ticks.due.store(due, Ordering::Relaxed);
            schedule.quiet.insert((due, slot.id), slot.clone());
        }
    }
}

impl Schedule {
    fn wake(&mut self, slot: &Arc<Slot>) {
        let ticks = &slot.ticks;
        ticks.due.store(AWAKE, Ordering::Relaxed);
        if !ticks.listed.swap(true, Ordering::Relaxed) {
            self.awake.push(slot.clone());
        }
    }

    /// Takes the group off the quiet groups; off the awake list, the next
    /// tick drops it.
    fn unplace(&mut self, slot: &Slot) {
        let due = slot.ticks.due.swap(UNPLACED, Ordering::Relaxed);
        if due != AWAKE && due != UNPLACED {
            self.quiet.remove(&(due, slot.id));
        }
    }
}
