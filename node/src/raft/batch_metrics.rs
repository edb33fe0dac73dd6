//! How much openraft coalesces: a [`MetricsRecorder`] that feeds the batch sizes RaftCore
//! reports (client writes merged into one append, entries per log append, entries per
//! state-machine apply) into the node's Prometheus histograms
//! (`petkv_raft_batch_entries{stage}`). Gauges and counters RaftCore also reports are ignored:
//! [`crate::edge::metrics::Metrics::encode`] reads them from openraft's metrics at scrape time.

use std::sync::Arc;

use openraft::metrics::MetricsRecorder;

use crate::edge::metrics::{Metrics, RaftBatchStage};

/// Installed on the Raft instance at start (`Raft::set_metrics_recorder`).
#[derive(Debug)]
pub struct BatchRecorder(pub Arc<Metrics>);

impl MetricsRecorder for BatchRecorder {
    fn record_apply_batch(&self, entry_count: u64) {
        self.0.record_raft_batch(RaftBatchStage::Apply, entry_count);
    }

    fn record_append_batch(&self, entry_count: u64) {
        self.0.record_raft_batch(RaftBatchStage::Append, entry_count);
    }

    fn record_write_batch(&self, entry_count: u64) {
        self.0.record_raft_batch(RaftBatchStage::ClientWrites, entry_count);
    }

    fn set_current_term(&self, _: u64) {}
    fn set_last_log_index(&self, _: u64) {}
    fn set_committed_index(&self, _: u64) {}
    fn set_applied_index(&self, _: u64) {}
    fn set_snapshot_index(&self, _: u64) {}
    fn set_purged_index(&self, _: u64) {}
    fn set_server_state(&self, _: u8) {}
    fn increment_vote(&self) {}
    fn increment_heartbeat(&self) {}
    fn increment_append(&self) {}
}
