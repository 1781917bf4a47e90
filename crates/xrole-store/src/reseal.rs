//! The batch loop shared by every re-seal after a key rotation: rows in
//! primary-key order, one write transaction per batch (the values rewritten
//! are exactly the ones read), resumable because re-sealed values are
//! skipped on the next run.

use xrole_crypto::{Aad, Keyring};

use crate::backend::{Conn, write_transaction};
use crate::error::{Error, Result};

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

/// A row's two sealed values under the primary key: `None` when both
/// already are (nothing to write), else both values to store, the
/// rewritten ones counted in `resealed`.
pub(crate) fn reseal_pair(
    keyring: &Keyring,
    (a, aad_a): (&[u8], &Aad),
    (b, aad_b): (&[u8], &Aad),
    resealed: &mut u64,
) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    if !keyring.needs_reseal(a) && !keyring.needs_reseal(b) {
        return Ok(None);
    }
    let mut one = |v: &[u8], aad: &Aad| -> Result<Vec<u8>> {
        if !keyring.needs_reseal(v) {
            return Ok(v.to_vec());
        }
        *resealed += 1;
        keyring.reseal(v, aad).map_err(Error::Crypto)
    };
    Ok(Some((one(a, aad_a)?, one(b, aad_b)?)))
}

/// How many of these pairs' sealed values are under a non-primary key.
pub(crate) fn count_stale(keyring: &Keyring, rows: &[(Vec<u8>, Vec<u8>)]) -> u64 {
    rows.iter()
        .map(|(a, b)| u64::from(keyring.needs_reseal(a)) + u64::from(keyring.needs_reseal(b)))
        .sum()
}
