//! Where readers keep [`FamilySnapshot`]s between reads: a directory (the CLI's cache) or
//! memory (a worker). A snapshot is only a cache: [`crate::Ledger::load`] checks that it was
//! made on the same ledger and that the family's next events chain onto it, and reads the
//! family from the start when it does not; losing or corrupting one costs a full read, never a
//! wrong state.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use pledger_core::ids::PromptName;
use pledger_core::names::SNAPSHOT_FILE_SUFFIX;
use pledger_core::verify::FamilySnapshot;

/// A reader's snapshots, by ledger and prompt.
pub trait SnapshotStore: Send + Sync {
    /// The snapshot kept for `prompt` on `ledger`, if any (one that cannot be read is none).
    fn get(&self, ledger: &str, prompt: &PromptName) -> Option<FamilySnapshot>;
    /// Keeps `snapshot` in place of the one before; failures are logged, not returned (the
    /// next read just starts from further back).
    fn put(&self, snapshot: FamilySnapshot);
}

/// Snapshots as files ([`FamilySnapshot::encode`]): `<root>/<ledger key>/<prompt>.snapshot`,
/// where the ledger key is the first 16 hex digits of the SHA-256 of the ledger's identity.
/// Written to a temporary file and renamed, so a reader never sees half of one.
pub struct SnapshotDir {
    root: PathBuf,
}

impl SnapshotDir {
    pub fn new(root: impl Into<PathBuf>) -> SnapshotDir {
        SnapshotDir { root: root.into() }
    }

    /// Where the snapshot of `prompt` on `ledger` is kept.
    pub fn path(&self, ledger: &str, prompt: &PromptName) -> PathBuf {
        let hash = pledger_core::verify::event_hash(ledger.as_bytes());
        let key = hash.trim_start_matches("sha256:");
        self.root
            .join(&key[..16])
            .join(format!("{prompt}{SNAPSHOT_FILE_SUFFIX}"))
    }
}

impl SnapshotStore for SnapshotDir {
    fn get(&self, ledger: &str, prompt: &PromptName) -> Option<FamilySnapshot> {
        let path = self.path(ledger, prompt);
        let bytes = std::fs::read(&path).ok()?;
        match FamilySnapshot::decode(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(path = %path.display(), "an unreadable snapshot is ignored: {e}");
                None
            }
        }
    }

    fn put(&self, snapshot: FamilySnapshot) {
        let path = self.path(&snapshot.ledger, &snapshot.prompt);
        let write = || -> std::io::Result<()> {
            let dir = path.parent().expect("a snapshot path has a directory");
            std::fs::create_dir_all(dir)?;
            let mut file = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(file.as_file_mut(), &snapshot.encode())?;
            file.persist(&path).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::debug!(path = %path.display(), "could not keep a snapshot: {e}");
        }
    }
}

/// Snapshots in memory, for a long-running reader (a worker, the release pages).
#[derive(Default)]
pub struct SnapshotMemory {
    kept: Mutex<HashMap<(String, PromptName), FamilySnapshot>>,
}

impl SnapshotMemory {
    /// The process's own: every worker and page of one `pledger up` reads the same ledger, so
    /// one snapshot per family serves them all. A snapshot holds a table entry per event,
    /// version and ended release of its family; one copy per worker made the workers' memory
    /// grow with history several times over.
    pub fn shared() -> Arc<SnapshotMemory> {
        static SHARED: OnceLock<Arc<SnapshotMemory>> = OnceLock::new();
        SHARED.get_or_init(Default::default).clone()
    }
}

impl SnapshotStore for SnapshotMemory {
    fn get(&self, ledger: &str, prompt: &PromptName) -> Option<FamilySnapshot> {
        let kept = self.kept.lock().expect("snapshot lock");
        kept.get(&(ledger.to_string(), prompt.clone())).cloned()
    }

    /// Keeps the snapshot that covers more of the family: a reader that lags behind another
    /// does not take the other back to an older point.
    fn put(&self, snapshot: FamilySnapshot) {
        let mut kept = self.kept.lock().expect("snapshot lock");
        let key = (snapshot.ledger.clone(), snapshot.prompt.clone());
        if kept.get(&key).is_some_and(|k| k.through > snapshot.through) {
            return;
        }
        kept.insert(key, snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pledger_core::state::PromptState;

    fn snapshot(prompt: &PromptName, through: u64) -> FamilySnapshot {
        FamilySnapshot {
            format: pledger_core::verify::SNAPSHOT_FORMAT,
            ledger: "ledger A".into(),
            prompt: prompt.clone(),
            through,
            head: None,
            head_sequence: through,
            state: PromptState::new(prompt.clone()),
            event_ids: Default::default(),
            ignored: Vec::new(),
        }
    }

    #[test]
    fn memory_keeps_the_snapshot_that_covers_more_and_is_shared_by_the_process() {
        let prompt = PromptName::parse("triage").unwrap();
        let memory = SnapshotMemory::default();
        memory.put(snapshot(&prompt, 40));
        memory.put(snapshot(&prompt, 12));
        let ledger = "ledger A";
        assert_eq!(memory.get(ledger, &prompt).map(|s| s.through), Some(40));
        memory.put(snapshot(&prompt, 41));
        assert_eq!(memory.get(ledger, &prompt).map(|s| s.through), Some(41));
        assert!(memory.get("another ledger", &prompt).is_none());
        assert!(Arc::ptr_eq(
            &SnapshotMemory::shared(),
            &SnapshotMemory::shared()
        ));
    }
}
