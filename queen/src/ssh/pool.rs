//! One connection per hive, opened on first use and reopened when it has died.

use super::*;

/// A hive's place in the pool; its async lock makes concurrent users share one connect.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<SshConnection>>>>;

/// One connection per hive, opened on first use and reopened when it has died.
pub struct SshPool {
    slots: Mutex<HashMap<String, Slot>>,
    pub settings: SshSettings,
}

impl SshPool {
    pub fn new(settings: SshSettings) -> Self {
        SshPool {
            slots: Mutex::new(HashMap::new()),
            settings,
        }
    }

    fn slot(&self, alias: &str) -> Slot {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(alias.to_owned())
            .or_default()
            .clone()
    }

    /// The hive's pooled connection, connecting when there is none or it died.
    pub async fn connect(
        &self,
        hive: &Hive,
        accept_new_host_keys: bool,
    ) -> Result<Arc<SshConnection>, SshError> {
        let slot = self.slot(&hive.alias);
        let mut guard = slot.lock().await;
        if let Some(connection) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        // `~/.ssh/config` is a file read: off the runtime's threads.
        let (owned, settings) = (hive.clone(), self.settings.clone());
        let target = tokio::task::spawn_blocking(move || SshTarget::resolve(&owned, &settings))
            .await
            .map_err(|e| SshError::Local {
                host: hive.host.clone(),
                reason: format!("reading the SSH client configuration failed: {e}"),
            })?;
        let connection =
            Arc::new(SshConnection::open(target, &self.settings, accept_new_host_keys).await?);
        *guard = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets a hive's connection (after a fault), so the next use reconnects.
    pub async fn forget(&self, alias: &str) {
        let slot = self.slot(alias);
        if let Some(connection) = slot.lock().await.take() {
            connection.disconnect().await;
        }
    }
}
