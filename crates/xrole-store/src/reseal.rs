//! The batch loop shared by every re-seal after a key rotation: rows in
//! primary-key order, one write transaction per batch (the values rewritten
//! are exactly the ones read), resumable because re-sealed values are
//! skipped on the next run.

use crate::backend::{Conn, write_transaction};
use crate::error::Result;

/// What a re-seal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResealReport {
    /// Rows examined.
    pub rows: u64,
    /// Sealed values rewritten under the primary key.
    pub resealed: u64,
}

/// One batch's outcome: rows read, the last row's id, values re-sealed.
pub(crate) struct Batch {
    pub rows: u64,
    pub last: Option<String>,
    pub resealed: u64,
}

/// Runs `batch(conn, after)` (the rows with ids after `after`) in a write
/// transaction each until a batch reads nothing, calling
/// `progress(done, total)` before the first and after each batch.
pub(crate) fn in_batches(
    conn: &mut Conn,
    total: i64,
    mut progress: impl FnMut(u64, u64),
    mut batch: impl FnMut(&mut Conn, &str) -> Result<Batch>,
) -> Result<ResealReport> {
    let total = u64::try_from(total).unwrap_or(0);
    let mut report = ResealReport::default();
    let mut after = String::new();
    progress(0, total);
    loop {
        let done = write_transaction(conn, |conn| batch(conn, &after))?;
        let Some(last) = done.last else { break };
        after = last;
        report.rows += done.rows;
        report.resealed += done.resealed;
        // Rows inserted meanwhile can push `done` past the first count.
        progress(report.rows, total.max(report.rows));
    }
    Ok(report)
}
