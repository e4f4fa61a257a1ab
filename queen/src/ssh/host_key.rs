//! Host-key checking against known_hosts: a known key passes, an unknown one only when
//! trusting new keys (and then recorded), a changed one never.

use super::*;

/// Checks the server's key against known_hosts; what it found is kept for the error.
pub(super) struct HostKeyCheck {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) known_hosts: PathBuf,
    /// Trust (and record) a key known_hosts does not have.
    pub(super) accept_new: bool,
    /// Why the key was refused, for the connect error.
    pub(super) verdict: Arc<Mutex<Option<SshError>>>,
    /// The SHA256 fingerprint of the key the server offered.
    pub(super) offered: Arc<Mutex<Option<String>>>,
}

impl HostKeyCheck {
    fn refuse(&self, error: SshError) -> Result<bool, russh::Error> {
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        Ok(false)
    }
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: &PublicKey = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(cert) => {
                let reason = format!(
                    "host certificates are not supported (key id {})",
                    cert.key_id()
                );
                return self.refuse(SshError::Unreachable {
                    host: self.host.clone(),
                    port: self.port,
                    reason,
                });
            }
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        *self.offered.lock().unwrap_or_else(|p| p.into_inner()) = Some(fingerprint.clone());
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => Ok(true),
            Ok(false) if self.accept_new => {
                tracing::warn!(host = %self.host, port = self.port, %fingerprint, "trusting a new host key");
                match russh::keys::known_hosts::learn_known_hosts_path(
                    &self.host,
                    self.port,
                    key,
                    &self.known_hosts,
                ) {
                    Ok(()) => Ok(true),
                    Err(e) => self.refuse(SshError::Unreachable {
                        host: self.host.clone(),
                        port: self.port,
                        reason: format!(
                            "cannot record its key in {}: {e}",
                            self.known_hosts.display()
                        ),
                    }),
                }
            }
            Ok(false) => self.refuse(SshError::HostKeyUnknown {
                host: self.host.clone(),
                port: self.port,
                fingerprint,
                known_hosts: self.known_hosts.clone(),
            }),
            Err(russh::keys::Error::KeyChanged { line }) => self.refuse(SshError::HostKeyChanged {
                host: self.host.clone(),
                port: self.port,
                line,
                fingerprint,
                known_hosts: self.known_hosts.clone(),
            }),
            Err(e) => self.refuse(SshError::Unreachable {
                host: self.host.clone(),
                port: self.port,
                reason: format!("cannot read {}: {e}", self.known_hosts.display()),
            }),
        }
    }
}
