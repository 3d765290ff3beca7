//! The runtime config layer: one key per prompt in the `pledger_routing` KV bucket, holding
//! the prompt's [`RoutingTable`]. Writes are compare-and-set on the key's revision and never
//! replace a table derived from a later ledger sequence.

use async_nats::jetstream::{self, kv};
use pledger_core::routing::RoutingTable;
use pledger_core::PromptName;

use crate::error::InfraError;
use crate::ledger::ROUTING_BUCKET;

const MAX_CAS_ATTEMPTS: usize = 10;

pub(crate) async fn ensure_bucket(
    js: &jetstream::Context,
    num_replicas: usize,
) -> Result<kv::Store, InfraError> {
    match js.get_key_value(ROUTING_BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: ROUTING_BUCKET.to_string(),
                description: "Prompt Ledger runtime config: routing table per prompt".into(),
                history: 16,
                storage: jetstream::stream::StorageType::File,
                num_replicas,
                ..Default::default()
            })
            .await
            .map_err(InfraError::stream_setup),
    }
}

pub(crate) async fn ensure_status_bucket(
    js: &jetstream::Context,
    num_replicas: usize,
) -> Result<kv::Store, InfraError> {
    match js.get_key_value(crate::ledger::CANARY_STATUS_BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: crate::ledger::CANARY_STATUS_BUCKET.to_string(),
                description: "Prompt Ledger: the canary monitor's judgement per active release"
                    .into(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                num_replicas,
                ..Default::default()
            })
            .await
            .map_err(InfraError::stream_setup),
    }
}

/// What a routing write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutingWrite {
    /// Written at this KV revision.
    Written(u64),
    /// The bucket already holds this routing, or a table from a later ledger sequence.
    AlreadyCurrent,
}

#[derive(Clone)]
pub struct RoutingStore {
    kv: kv::Store,
}

impl RoutingStore {
    pub async fn open(js: &jetstream::Context) -> Result<RoutingStore, InfraError> {
        // Looked up, never created (only `init` creates buckets): a lookup that gets no
        // answer, as while a cluster elects the bucket's leader, is tried again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match js.get_key_value(ROUTING_BUCKET).await {
                Ok(kv) => return Ok(RoutingStore { kv }),
                Err(e) if attempt < crate::ledger::UNANSWERED_ATTEMPTS => {
                    tracing::debug!(attempt, "looking up {ROUTING_BUCKET}: {e}; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(e) => {
                    return Err(InfraError::StreamMissing(format!(
                        "the bucket {ROUTING_BUCKET}: {e}"
                    )))
                }
            }
        }
    }

    pub fn store(&self) -> &kv::Store {
        &self.kv
    }

    /// The prompt's table and its KV revision, if one was written.
    pub async fn get(
        &self,
        prompt: &PromptName,
    ) -> Result<Option<(RoutingTable, u64)>, InfraError> {
        let Some(entry) = self
            .kv
            .entry(prompt.as_str())
            .await
            .map_err(InfraError::routing)?
        else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let table =
            RoutingTable::from_json(&entry.value).map_err(|e| InfraError::CorruptRouting {
                prompt: prompt.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Some((table, entry.revision)))
    }

    /// Replaces the stored table at `revision` whatever its ledger sequence (reconciliation:
    /// the ledger wins). Returns false if another writer changed the key since `revision`.
    pub async fn replace(&self, table: &RoutingTable, revision: u64) -> Result<bool, InfraError> {
        let value: bytes::Bytes = serde_json::to_vec(table).expect("table serializes").into();
        match self.kv.update(table.prompt.as_str(), value, revision).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(InfraError::routing(e)),
        }
    }

    /// Writes `table` with compare-and-set on the revision read just before, retrying when
    /// another writer got in between, unless the stored table is as recent or more.
    pub async fn publish(&self, table: &RoutingTable) -> Result<RoutingWrite, InfraError> {
        let value: bytes::Bytes = serde_json::to_vec(table).expect("table serializes").into();
        for _ in 0..MAX_CAS_ATTEMPTS {
            let current = self.get(&table.prompt).await?;
            let result = match &current {
                Some((stored, _)) if stored.ledger_sequence >= table.ledger_sequence => {
                    return Ok(RoutingWrite::AlreadyCurrent)
                }
                // Same routing from a later sequence (an event that does not move traffic):
                // nothing for services to see, so no write.
                Some((stored, _))
                    if RoutingTable {
                        ledger_sequence: table.ledger_sequence,
                        ..stored.clone()
                    } == *table =>
                {
                    return Ok(RoutingWrite::AlreadyCurrent)
                }
                Some((_, revision)) => self
                    .kv
                    .update(table.prompt.as_str(), value.clone(), *revision)
                    .await
                    .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision),
                None => self
                    .kv
                    .create(table.prompt.as_str(), value.clone())
                    .await
                    .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists),
            };
            match result {
                Ok(revision) => return Ok(RoutingWrite::Written(revision)),
                Err(true) => continue,
                Err(false) => {
                    return Err(InfraError::Routing(format!(
                        "writing the routing table of `{}` failed",
                        table.prompt
                    )))
                }
            }
        }
        Err(InfraError::Routing(format!(
            "the routing table of `{}` kept changing; the router will reconcile it",
            table.prompt
        )))
    }
}
