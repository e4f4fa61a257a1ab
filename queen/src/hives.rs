//! The hive registry: what the queen last learned about each hive.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use rbee_protocol::HiveCapabilities;
use serde::Serialize;
use tokio::sync::watch;

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct HiveRecord {
    pub online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<HiveCapabilities>,
    pub updated_unix_s: u64,
}

#[derive(Default)]
pub struct HiveRegistry {
    hives: Mutex<HashMap<String, HiveRecord>>,
    /// The model ids each hive held when its catalog was last listed.
    models: Mutex<HashMap<String, Vec<String>>>,
    /// Bumped whenever a hive goes on- or offline, so the dashboard's stream pushes
    /// without polling.
    changed: watch::Sender<u64>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl HiveRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HiveRecord>> {
        self.hives.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn mark_online(
        &self,
        alias: &str,
        agent_version: String,
        capabilities: Option<HiveCapabilities>,
    ) {
        let mut hives = self.lock();
        let record = hives.entry(alias.to_owned()).or_insert(HiveRecord {
            online: true,
            agent_version: None,
            capabilities: None,
            updated_unix_s: 0,
        });
        record.online = true;
        record.agent_version = Some(agent_version);
        if capabilities.is_some() {
            record.capabilities = capabilities;
        }
        record.updated_unix_s = now();
        drop(hives);
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn mark_offline(&self, alias: &str) {
        if let Some(record) = self.lock().get_mut(alias) {
            record.online = false;
            record.updated_unix_s = now();
        }
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn set_models(&self, alias: &str, ids: Vec<String>) {
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(alias.to_owned(), ids);
    }

    /// Every model id some hive held when last listed, with the hives holding it.
    pub fn known_models(&self) -> Vec<(String, Vec<String>)> {
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_id: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (alias, ids) in models.iter() {
            for id in ids {
                by_id.entry(id.clone()).or_default().push(alias.clone());
            }
        }
        by_id
            .into_iter()
            .map(|(id, mut hives)| {
                hives.sort();
                (id, hives)
            })
            .collect()
    }

    pub fn get(&self, alias: &str) -> Option<HiveRecord> {
        self.lock().get(alias).cloned()
    }
}
