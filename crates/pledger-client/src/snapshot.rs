//! Snapshot files: every routing table a resolver holds, as JSON, so a service restarting
//! while NATS is away still serves what it served before.
//!
//! ```json
//! {"format": 2, "saved_at": "2026-11-24T09:30:00.000Z",
//!  "source": "KV_pledger_routing created 1795510800000000000@single server",
//!  "tables": [<RoutingTable>, ...]}
//! ```
//!
//! `source` names the routing bucket the tables came from (its stream's creation time and
//! cluster). A resolver that reaches a server whose bucket is another one drops the
//! snapshot's tables rather than serving them as that ledger's (format 1 had no source and is
//! treated as from another bucket).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pledger_core::routing::RoutingTable;
use pledger_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::ClientError;

/// The snapshot format this SDK writes; newer ones are refused rather than misread.
pub const SNAPSHOT_FORMAT: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub format: u32,
    pub saved_at: Timestamp,
    /// The routing bucket the tables came from; `None` when unknown (format 1, or tables
    /// that never came from a server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub tables: Vec<RoutingTable>,
}

impl Snapshot {
    /// When the snapshot was saved, as a wall-clock time.
    pub fn saved_at(&self) -> SystemTime {
        let millis = self.saved_at.unix_millis().max(0) as u64;
        UNIX_EPOCH + Duration::from_millis(millis)
    }
}

pub(crate) fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    Timestamp::from_unix_millis(millis as i64)
}

/// Reads a snapshot; `Ok(None)` when the file does not exist.
pub(crate) fn read(path: &Path) -> Result<Option<Snapshot>, ClientError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ClientError::snapshot(path, e)),
    };
    let snapshot: Snapshot =
        serde_json::from_slice(&bytes).map_err(|e| ClientError::snapshot(path, e))?;
    if snapshot.format > SNAPSHOT_FORMAT {
        return Err(ClientError::snapshot(
            path,
            format!(
                "format {} is newer than this SDK reads ({SNAPSHOT_FORMAT})",
                snapshot.format
            ),
        ));
    }
    Ok(Some(snapshot))
}

/// Writes a snapshot atomically: a temporary file in the same directory, flushed to disk,
/// then renamed over `path`. A reader (or a crash) sees the old file or the new one.
pub(crate) fn write(
    path: &Path,
    source: Option<String>,
    tables: Vec<RoutingTable>,
) -> Result<(), ClientError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let snapshot = Snapshot {
        format: SNAPSHOT_FORMAT,
        saved_at: now(),
        source,
        tables,
    };
    let bytes = serde_json::to_vec_pretty(&snapshot).map_err(|e| ClientError::snapshot(path, e))?;
    let name = path
        .file_name()
        .ok_or_else(|| ClientError::snapshot(path, "not a file path"))?
        .to_string_lossy();
    let tmp: PathBuf = path.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ClientError::snapshot(path, e));
    }
    Ok(())
}
