//! [`SnapshotWriter`]: how a host hands a group (of a node or a runtime)
//! a snapshot of its state machine.

use crate::core::{Index, SnapshotMeta, Term};
use crate::error::NodeError;
use crate::snapshot::{SnapshotFile, SnapshotTemp};
use std::path::Path;

/// How a finished snapshot reaches its group: the owner records it (or
/// refuses it as stale) and answers.
pub(crate) type Deliver =
    Box<dyn FnOnce(SnapshotMeta, SnapshotFile) -> Result<(), NodeError> + Send>;

/// A snapshot being taken, from [`crate::node::Node::begin_snapshot`] or
/// [`crate::runtime::Runtime::begin_snapshot`]. The
/// host writes its state machine as of the snapshot's index into the file,
/// either with [`SnapshotWriter::write`] or by opening
/// [`SnapshotWriter::path`] itself (not both), then calls
/// [`SnapshotWriter::finish`]. Dropping it unfinished aborts it. The
/// host's apply loop may keep running meanwhile: the snapshot stands for
/// the log through its index whatever was applied since.
pub struct SnapshotWriter {
    temp: Option<SnapshotTemp>,
    meta: SnapshotMeta,
    deliver: Option<Deliver>,
}

impl SnapshotWriter {
    pub(crate) fn new(temp: SnapshotTemp, meta: SnapshotMeta, deliver: Deliver) -> SnapshotWriter {
        SnapshotWriter {
            temp: Some(temp),
            meta,
            deliver: Some(deliver),
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

    /// The temporary file to fill; valid until `finish` or `abort`. Ask
    /// only when writing by path: bytes given to [`SnapshotWriter::write`]
    /// are checksummed as they come, but once the path was handed out
    /// `finish` reads the file back to checksum what it holds.
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

    /// Makes the file durable, checksums it (see [`SnapshotWriter::path`])
    /// and gives it its final name,
    /// then hands it to the group, which records it in its WAL and, once
    /// that is durable, compacts its log and deletes older snapshots. Runs
    /// on the caller's thread and returns once the file is durable and
    /// handed over. Fails with [`NodeError::StaleSnapshot`] when the group
    /// got a snapshot at or beyond this index meanwhile (the file is
    /// deleted).
    pub fn finish(mut self) -> Result<(), NodeError> {
        let temp = self
            .temp
            .take()
            .expect("a writer holds its file until it ends");
        let file = temp.finish().map_err(NodeError::Snapshot)?;
        let deliver = self
            .deliver
            .take()
            .expect("a writer delivers its file once");
        deliver(self.meta.clone(), file)
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
