//! The hive registry: what the queen last learned about each hive.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use rbee_protocol::HiveCapabilities;
use rbee_protocol::cluster::LinkHealth;
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
    /// How the queen's SSH commands to each hive fare.
    links: Mutex<HashMap<String, Link>>,
}

#[derive(Default)]
struct Link {
    health: LinkHealth,
    successes_in_row: u32,
}

/// After how many failures, and then successes, in a row a link changes state.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

/// A link's change of state, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    pub healthy: bool,
    pub reason: String,
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

    /// Records how one SSH command to `alias` fared (`Err` with the reason for a
    /// failure of the connection, not of the command's own work) and returns the
    /// change of state it makes, if any, which is logged.
    pub fn record_ssh(
        &self,
        alias: &str,
        outcome: Result<(), &str>,
        thresholds: Thresholds,
    ) -> Option<HealthChange> {
        let change = {
            let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
            let link = links.entry(alias.to_owned()).or_default();
            let health = &mut link.health;
            match outcome {
                Ok(()) => {
                    health.last_success_unix_s = Some(now());
                    health.consecutive_failures = 0;
                    link.successes_in_row += 1;
                    let enough = match health.healthy {
                        None => true,
                        Some(true) => false,
                        Some(false) => link.successes_in_row >= thresholds.healthy_after.max(1),
                    };
                    enough.then(|| {
                        health.healthy = Some(true);
                        HealthChange {
                            healthy: true,
                            reason: format!(
                                "{} SSH command(s) in a row succeeded",
                                link.successes_in_row
                            ),
                        }
                    })
                }
                Err(reason) => {
                    health.last_error = Some(reason.to_owned());
                    health.last_error_unix_s = Some(now());
                    health.consecutive_failures += 1;
                    link.successes_in_row = 0;
                    (health.healthy != Some(false)
                        && health.consecutive_failures >= thresholds.unhealthy_after.max(1))
                    .then(|| {
                        health.healthy = Some(false);
                        HealthChange {
                            healthy: false,
                            reason: format!(
                                "{} SSH command(s) in a row failed, the last: {reason}",
                                health.consecutive_failures
                            ),
                        }
                    })
                }
            }
        };
        if let Some(change) = &change {
            if change.healthy {
                tracing::info!(hive = alias, reason = %change.reason, "hive SSH healthy");
            } else {
                tracing::warn!(hive = alias, reason = %change.reason, "hive SSH unhealthy");
            }
        }
        // The dashboard shows the last success and error too.
        self.changed.send_modify(|n| *n += 1);
        change
    }

    /// How the queen's SSH commands to `alias` fare.
    pub fn ssh_health(&self, alias: &str) -> LinkHealth {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(alias)
            .map(|l| l.health.clone())
            .unwrap_or_default()
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

    /// Forgets everything learned about a hive that left the inventory.
    pub fn forget(&self, alias: &str) {
        self.lock().remove(alias);
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(alias);
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(alias);
        self.changed.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLDS: Thresholds = Thresholds {
        unhealthy_after: 3,
        healthy_after: 2,
    };

    #[test]
    fn one_lost_command_does_not_flip_a_hive_and_recovery_needs_successes_in_row() {
        let hives = HiveRegistry::default();
        assert_eq!(hives.ssh_health("h").healthy, None);
        let change = hives.record_ssh("h", Ok(()), THRESHOLDS);
        assert!(change.is_some_and(|c| c.healthy));
        // Two failures, a success, two failures: never three in a row.
        for outcome in [
            Err("timeout"),
            Err("timeout"),
            Ok(()),
            Err("reset"),
            Err("reset"),
        ] {
            assert_eq!(hives.record_ssh("h", outcome, THRESHOLDS), None);
        }
        let health = hives.ssh_health("h");
        assert_eq!(health.healthy, Some(true));
        assert_eq!(health.consecutive_failures, 2);
        assert_eq!(health.last_error.as_deref(), Some("reset"));
        let change = hives
            .record_ssh("h", Err("refused"), THRESHOLDS)
            .expect("the third failure in a row");
        assert!(!change.healthy);
        assert!(
            change
                .reason
                .contains("3 SSH command(s) in a row failed, the last: refused")
        );
        assert_eq!(hives.record_ssh("h", Err("refused"), THRESHOLDS), None);
        // One success is not enough to trust it again; two in a row are.
        assert_eq!(hives.record_ssh("h", Ok(()), THRESHOLDS), None);
        assert_eq!(hives.ssh_health("h").healthy, Some(false));
        let change = hives
            .record_ssh("h", Ok(()), THRESHOLDS)
            .expect("healthy again");
        assert!(change.healthy);
        assert_eq!(hives.ssh_health("h").consecutive_failures, 0);
    }
}
