//! Kubeconfigs and clients for a control plane: the admin the harness and tests act as, and
//! further identities (an operator under test gets its own, so the audit log tells it apart).

use std::path::{Path, PathBuf};

use kube::Client;

use crate::{ControlPlane, Error, pki, random_suffix};

impl ControlPlane {
    /// A new admin client. Create one per test: a client is bound to the runtime it runs on.
    pub async fn client(&self) -> Client {
        self.admin_client()
            .await
            .unwrap_or_else(|e| panic!("admin client for {}: {e}", self.kubeconfig.display()))
    }

    /// A new client authenticated as `user` (in `group`, if any) with a fresh client
    /// certificate from the cluster CA. Authorization is RBAC: without a binding (or the
    /// `system:masters` group) the user may do nothing.
    pub async fn client_as(&self, user: &str, group: Option<&str>) -> Client {
        let client = match self.kubeconfig_as(user, group) {
            Ok(path) => client_from(&path).await,
            Err(e) => Err(e),
        };
        client.unwrap_or_else(|e| panic!("client for user {user}: {e}"))
    }

    /// Writes a kubeconfig for `user` (in `group`, if any) into the run's directory, with a
    /// fresh client certificate; for tools that act as that user (kubectl, helm).
    pub fn kubeconfig_as(&self, user: &str, group: Option<&str>) -> Result<PathBuf, Error> {
        // File names only: the user name is free text to the API server.
        let safe: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let stem = format!("user-{safe}-{}", random_suffix());
        let (cert, key) = pki::client_cert(&self.dir, &self.ca, &stem, user, group)?;
        let path = self.dir.join(format!("{stem}.kubeconfig"));
        write_kubeconfig(&path, &self.server, &self.dir.join("ca.crt"), &cert, &key)?;
        Ok(path)
    }

    pub(crate) async fn admin_client(&self) -> Result<Client, Error> {
        client_from(&self.kubeconfig).await
    }
}

pub(crate) async fn client_from(kubeconfig: &Path) -> Result<Client, Error> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| Error::Client(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| Error::Client(e.to_string()))?;
    Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
}

/// A kubeconfig with one context: `server`, trusting `ca`, as the owner of `cert`/`key`.
pub(crate) fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<(), Error> {
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: onus-testenv
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: user
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: onus-testenv
  context:
    cluster: onus-testenv
    user: user
current-context: onus-testenv
",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    );
    std::fs::write(path, yaml).map_err(|e| Error::io(path, e))
}
