//! A worker of the runtime's pool. A round takes the groups on the run
//! queue (up to [`MAX_GROUPS_PER_ROUND`]), steps each with what its
//! mailbox holds, writes what all of them must persist as one WAL batch,
//! and waits for one sync; then each group hears, through its mailbox,
//! that its writes are durable, and releases what waited on them
//! (persist-before-send holds per group as on a node).
//!
//! A group is held by one worker at a time: it stays marked scheduled
//! while a worker steps it, and its lock is kept until its writes are in
//! the WAL, so two rounds never write one group's batches out of order.
//!
//! An inline runtime runs the same round for one group on the thread that
//! gave it input ([`drive_inline`]), and leaves the wait for the sync to
//! the runtime's sync thread ([`run_syncs`]).

use super::{Busy, Cell, Shared, Slot, Work};
use crate::core::Index;
use crate::group::{JobWriter, Verification, Verified};
use crate::snapshot::SnapshotError;
use crate::wal::{GroupWrite, WriteTicket};
use crossbeam_channel::Receiver;
use parking_lot::MutexGuard;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

/// Groups one round steps at most: enough to share a sync among many
/// groups, few enough that a round's locks are not held long.
const MAX_GROUPS_PER_ROUND: usize = 256;

pub(super) fn run(shared: &Arc<Shared>) {
    while let Ok(Some(first)) = shared.run_queue_rx.recv() {
        let mut round = vec![first];
        let mut stop = false;
        while round.len() < MAX_GROUPS_PER_ROUND {
            match shared.run_queue_rx.try_recv() {
                Ok(Some(slot)) => round.push(slot),
                Ok(None) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if !shared.failed.load(Ordering::Acquire) {
            shared.rounds.fetch_add(1, Ordering::Relaxed);
            match step_and_write(shared, &round) {
                Ok(Some(written)) => wait_and_release(shared, written),
                Ok(None) => {}
                Err(why) => shared.fail(why),
            }
        }
        if stop {
            return;
        }
    }
}

/// A group stepped in this round and what it wrote.
struct Stepped<'a> {
    slot: &'a Arc<Slot>,
    cell: MutexGuard<'a, Cell>,
    writer: Option<JobWriter>,
    /// The last write's number, when a sync must be waited for.
    awaited: Option<u64>,
}

/// A round's write that groups wait on: durable once `ticket` is, when
/// each group hears that its writes through the given number are.
pub(super) struct Written {
    ticket: WriteTicket,
    durable: Vec<(Arc<Slot>, u64)>,
}

/// Waits for a round's sync, then tells each group its writes are
/// durable (which schedules it to release what waited on them).
fn wait_and_release(shared: &Arc<Shared>, written: Written) {
    for (slot, seq) in wait_for_sync(shared, written) {
        shared.deliver(&slot, Work::Durable(seq));
    }
}

/// Waits for a round's sync: the groups to tell, with the number of
/// their last write; none after a failure, which stops the runtime.
fn wait_for_sync(shared: &Shared, written: Written) -> Vec<(Arc<Slot>, u64)> {
    shared.syncs.fetch_add(1, Ordering::Relaxed);
    match shared.wal.wait_durable(written.ticket) {
        Ok(()) => written.durable,
        Err(err) => {
            shared.fail(format!("storage failed: {err}"));
            Vec::new()
        }
    }
}

/// Steps the groups of a round and writes what they must persist as one
/// WAL batch, without waiting for its sync: what waits on it comes back
/// (`None`: nothing does). An error stops the runtime.
fn step_and_write(shared: &Arc<Shared>, round: &[Arc<Slot>]) -> Result<Option<Written>, String> {
    let wal = &shared.wal;
    let segment_size = shared.config.wal.segment_size;
    shared
        .group_steps
        .fetch_add(round.len() as u64, Ordering::Relaxed);
    let mut stepped: Vec<Stepped<'_>> = Vec::with_capacity(round.len());
    let mut spare: Vec<Work> = Vec::new();
    let mut failure = None;
    for slot in round {
        let mut cell = slot.cell.lock();
        // The mailbox gets the buffer the previous group's work came in:
        // buffers circulate instead of one allocation per group and round.
        let mut work = std::mem::replace(&mut *slot.mailbox.lock(), std::mem::take(&mut spare));
        if slot.stopped.load(Ordering::Acquire) {
            continue;
        }
        slot.take_acked(&mut cell.group);
        cell.group.set_log_level(shared.log_level());
        // Ticks that gathered while the group was quiet are given to it
        // quiet, before the inputs that may wake it: given to an awake
        // leader in one burst, they would run several check-quorum periods
        // with no answer in between and depose it.
        if slot.ticks.quiet() {
            slot.take_ticks(&mut cell.group, &shared.ticker);
        }
        for item in work.drain(..) {
            match item {
                Work::Input(input) => cell.group.handle(input),
                Work::Ticks => slot.take_ticks(&mut cell.group, &shared.ticker),
                Work::Durable(seq) => cell.group.durable(seq),
                Work::Verified(verified) => cell.group.on_verified(verified),
                Work::Wake => {}
            }
        }
        spare = work;
        cell.group.process();
        for verification in cell.group.take_verifications() {
            verify(shared, slot, verification);
        }
        let jobs = cell.group.take_writes();
        let mut writer = None;
        let mut awaited = None;
        if !jobs.is_empty() && failure.is_none() {
            let mut jobs_writer = JobWriter::new(slot.id, segment_size, Some(cell.store.clone()));
            for job in jobs {
                let seq = job.seq;
                let needs_sync = job.needs_sync();
                if let Err(err) = jobs_writer.add(wal, job) {
                    failure = Some(err.to_string());
                    break;
                }
                if needs_sync {
                    awaited = Some(seq);
                }
            }
            for note in jobs_writer.take_notes() {
                shared.note(slot, note);
            }
            writer = Some(jobs_writer);
        }
        // Published before the write: a leader's appends do not wait for
        // its own copy (the Raft thesis, 10.2.1), and what the group
        // releases only once durable is still held in it.
        publish(shared, slot, &mut cell);
        stepped.push(Stepped {
            slot,
            cell,
            writer,
            awaited,
        });
    }

    let ticket = match failure {
        Some(why) => Err(why),
        None => {
            let writes: Vec<GroupWrite<'_>> = stepped
                .iter()
                .filter_map(|s| s.writer.as_ref().map(JobWriter::final_write))
                .collect();
            wal.write_groups(&writes).map_err(|err| err.to_string())
        }
    };
    // The writes are in the WAL in order: other workers may step these
    // groups again while this one waits for the sync.
    let mut durable = Vec::new();
    for s in stepped {
        drop(s.cell);
        if let Some(seq) = s.awaited {
            durable.push((s.slot.clone(), seq));
        }
        release(shared, s.slot);
    }
    let ticket = ticket.map_err(|why| format!("storage failed: {why}"))?;
    Ok((!durable.is_empty()).then_some(Written { ticket, durable }))
}

/// Inline runtime: steps `slot` on this thread with what its mailbox
/// holds (the caller's input among it), writes what it must persist and
/// hands the wait for the sync to the sync thread (or, with nothing to
/// sync, reports the write durable at once). Input that arrived meanwhile
/// gets another round before this returns. A caller finding the group
/// held by another thread waits for its turn (`Busy::Wait`), or leaves
/// its input to that thread (`Busy::HandOff`).
pub(super) fn drive_inline(shared: &Arc<Shared>, slot: &Arc<Slot>, mut busy: Busy) {
    loop {
        // Pairs with the fence after letting go below: either this caller
        // takes the turn, or the holder sees its input once it lets go.
        fence(Ordering::SeqCst);
        let turn = match busy {
            Busy::Wait => slot.turn.lock(),
            Busy::HandOff => match slot.turn.try_lock() {
                Some(turn) => turn,
                None => return,
            },
        };
        if shared.failed.load(Ordering::Acquire) {
            return;
        }
        shared.rounds.fetch_add(1, Ordering::Relaxed);
        match step_and_write(shared, std::slice::from_ref(slot)) {
            Ok(Some(written)) => {
                // Queued during the turn, so one group's waits reach the
                // sync thread in the order of its writes. Without one, the
                // write is durable at once (or the runtime is stopping):
                // the group takes that in the next turn of this loop.
                if let Err(written) = shared.queue_sync(written) {
                    for (slot, seq) in wait_for_sync(shared, written) {
                        slot.mailbox.lock().push(Work::Durable(seq));
                    }
                }
            }
            Ok(None) => {}
            Err(why) => {
                shared.fail(why);
                return;
            }
        }
        drop(turn);
        fence(Ordering::SeqCst);
        if slot.mailbox.lock().is_empty() {
            return;
        }
        // Input that came during the round: a thread holding the turn now
        // steps it itself.
        busy = Busy::HandOff;
    }
}

/// The sync thread of an inline runtime: waits for each queued write in
/// turn, then steps the groups it released. Runs until the runtime hangs
/// up the queue, after the waits queued before.
pub(super) fn run_syncs(shared: &Arc<Shared>, waits: &Receiver<Written>) {
    for written in waits {
        wait_and_release(shared, written);
    }
}

/// Moves a group's status and output where the host finds them, after
/// keeping the runtime's entry cache within its budget, and places the
/// group for the ticks to come by how many it can go without.
fn publish(shared: &Shared, slot: &Arc<Slot>, cell: &mut Cell) {
    account_cache(shared, slot, cell);
    cell.group.fill_status(&mut slot.status.lock());
    shared.ticker.place(slot, cell.group.quiet_ticks_allowed());
    cell.group.flush_output(&mut slot.outbox.lock().pending);
    shared.list_if_pending(slot);
}

/// Counts the group's cached entries in the runtime's total; beyond the
/// budget, the group drops what it may. The group just stepped pays: the
/// active ones hold the most, and what they drop is what they handed out
/// last, still in the page cache when a follower asks for it.
fn account_cache(shared: &Shared, slot: &Slot, cell: &mut Cell) {
    let budget = shared.config.cache_bytes;
    let total = shared.recount_cache(slot, cell.group.cached_entry_bytes());
    if budget > 0 && total > budget {
        cell.group.evict_cached_entries(Index::MAX);
        shared.recount_cache(slot, cell.group.cached_entry_bytes());
    }
}

/// The worker lets go of a group: input that arrived meanwhile gets the
/// group scheduled again. (An inline round looks at the mailbox itself.)
fn release(shared: &Arc<Shared>, slot: &Arc<Slot>) {
    if shared.is_inline() {
        return;
    }
    slot.scheduled.store(false, Ordering::SeqCst);
    if !slot.mailbox.lock().is_empty() {
        shared.schedule(slot, Busy::HandOff);
    }
}

/// Checksums and syncs a received snapshot off the workers; the result
/// goes back through the group's mailbox.
fn verify(shared: &Arc<Shared>, slot: &Arc<Slot>, verification: Verification) {
    let Verification { id, partial } = verification;
    let target = slot.clone();
    let spawned = shared.spawn(format!("embraft-rt{}-snap", shared.id), move |shared| {
        let result = partial.finish();
        shared.deliver(&target, Work::Verified(Verified { id, result }));
    });
    match spawned {
        Ok(handle) => {
            let mut verifiers = shared.verifiers.lock();
            verifiers.retain(|h| !h.is_finished());
            verifiers.push(handle);
        }
        Err(err) => shared.deliver(
            slot,
            Work::Verified(Verified {
                id,
                result: Err(SnapshotError::Invalid(err.to_string())),
            }),
        ),
    }
}
