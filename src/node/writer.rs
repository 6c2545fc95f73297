//! [`SnapshotWriter`]: how a host hands the node a snapshot of its state
//! machine.

use super::driver::Input;
use super::{Inputs, NodeError, Shared};
use crate::core::{Index, SnapshotMeta, Term};
use crate::snapshot::SnapshotTemp;
use std::path::Path;
use std::sync::{Arc, Weak};

/// A snapshot being taken, from [`crate::node::Node::begin_snapshot`]. The
/// host writes its state machine as of the snapshot's index into the file,
/// either with [`SnapshotWriter::write`] or by opening
/// [`SnapshotWriter::path`] itself (not both), then calls
/// [`SnapshotWriter::finish`]. Dropping it unfinished aborts it. The
/// host's apply loop may keep running meanwhile: the snapshot stands for
/// the log through its index whatever was applied since.
pub struct SnapshotWriter {
    temp: Option<SnapshotTemp>,
    meta: SnapshotMeta,
    inputs: Weak<Inputs>,
    shared: Arc<Shared>,
}

impl SnapshotWriter {
    pub(crate) fn new(
        temp: SnapshotTemp,
        meta: SnapshotMeta,
        inputs: Weak<Inputs>,
        shared: Arc<Shared>,
    ) -> SnapshotWriter {
        SnapshotWriter {
            temp: Some(temp),
            meta,
            inputs,
            shared,
        }
    }

    /// The log index the snapshot stands for.
    pub fn index(&self) -> Index {
        self.meta.index
    }

    /// The term of the entry at [`SnapshotWriter::index`].
    pub fn term(&self) -> Term {
        self.meta.term
    }

    /// The temporary file to fill; valid until `finish` or `abort`.
    pub fn path(&self) -> &Path {
        self.temp().path()
    }

    /// Appends `data` to the file.
    pub fn write(&mut self, data: &[u8]) -> Result<(), NodeError> {
        let temp = self
            .temp
            .as_mut()
            .expect("a writer holds its file until it ends");
        temp.write(data).map_err(NodeError::Snapshot)
    }

    /// Makes the file durable, checksums it and gives it its final name,
    /// then queues it for the node, which records it in its WAL and, once
    /// that is durable, compacts its log and deletes older snapshots. Runs
    /// on the caller's thread and returns once the file is durable and
    /// queued. Fails with [`NodeError::StaleSnapshot`] when the node got a
    /// snapshot at or beyond this index meanwhile (the file is deleted).
    pub fn finish(mut self) -> Result<(), NodeError> {
        let temp = self
            .temp
            .take()
            .expect("a writer holds its file until it ends");
        let file = temp.finish().map_err(NodeError::Snapshot)?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        let input = Input::SnapshotTaken {
            meta: self.meta.clone(),
            file,
            reply,
        };
        // Blocking: the file is already in place, and the driver drains its
        // queue promptly (an inline node has answered when this returns).
        // A node freed meanwhile leaves an unrecorded file, which its next
        // start deletes.
        let Some(inputs) = self.inputs.upgrade() else {
            return Err(self.shared.failure_error());
        };
        inputs.send_blocking(input)?;
        drop(inputs);
        answer.recv().map_err(|_| self.shared.failure_error())?
    }

    /// Gives up: the file is deleted.
    pub fn abort(mut self) {
        if let Some(temp) = self.temp.take() {
            temp.abort();
        }
    }

    fn temp(&self) -> &SnapshotTemp {
        self.temp
            .as_ref()
            .expect("a writer holds its file until it ends")
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            temp.abort();
        }
    }
}
