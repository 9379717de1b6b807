//! The agent's Kubernetes client, shared by every source that reads the
//! Kubernetes API (`kubernetes`, the scrape source's `kubernetes_sd_configs`,
//! `revproxy_log` over `pods/log`).
//!
//! It authenticates as every Kubernetes client does: with `kubeconfig` set
//! (`--kubeconfig FILE` or the config's `kubeconfig:`), that file's current
//! context; otherwise the in-cluster service account (the token and CA
//! mounted under `/var/run/secrets/kubernetes.io/serviceaccount` and
//! `KUBERNETES_SERVICE_HOST`), then `KUBECONFIG`, then `~/.kube/config`.
//! Tokens never reach a log line: errors name the file, not its contents.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Why no Kubernetes client could be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// The kubeconfig file cannot be read or parsed.
    #[error("reading kubeconfig {}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither the in-cluster service account nor a kubeconfig is usable.
    #[error(
        "no Kubernetes credentials: not in a cluster (no service account) and no usable kubeconfig; give --kubeconfig FILE or set KUBECONFIG"
    )]
    Infer(#[source] kube::config::InferConfigError),
    /// The configuration is complete but the client cannot be built (bad CA,
    /// unreadable client certificate).
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// The client configuration: from `kubeconfig` when given, else inferred.
pub async fn config(kubeconfig: Option<&Path>) -> Result<kube::Config, KubeError> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| KubeError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })
        }
        None => kube::Config::infer().await.map_err(KubeError::Infer),
    }
}

/// A client for `kubeconfig` (or the inferred configuration).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeError> {
    let cfg = config(kubeconfig).await?;
    kube::Client::try_from(cfg).map_err(KubeError::Client)
}

/// A client for `kubeconfig`, retried with backoff (1s, doubling to 5m)
/// while it cannot be built: each failure is counted in the source's errors
/// as `kubernetes_client` and logged when its message changes. `None` when
/// the source is stopped first. `what` names the user in the log.
pub async fn client_with_retry(kubeconfig: Option<&Path>, cx: &crate::sources::SourceContext, what: &str) -> Option<kube::Client> {
    let mut wait = std::time::Duration::from_secs(1);
    let mut last_err = String::new();
    loop {
        match client(kubeconfig).await {
            Ok(c) => return Some(c),
            Err(e) => {
                cx.error("kubernetes_client");
                let msg = csoc_common::error::error_chain(&e);
                if msg != last_err {
                    tracing::error!(source = %cx.name, what, error = %msg, "no Kubernetes client; retrying");
                    last_err = msg;
                }
                tokio::select! {
                    _ = cx.shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(std::time::Duration::from_secs(300));
            }
        }
    }
}

/// Whether `e` is the API server's 403 Forbidden (RBAC denies the verb).
pub fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

/// Whether `e` is 404 Not Found (for example the metrics API is not served).
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kubeconfig_file_gives_its_server_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster: {server: \"http://127.0.0.1:6443\"}\nusers:\n- name: u\n  user: {token: s3cret}\ncontexts:\n- name: c\n  context: {cluster: k, user: u, namespace: gen3}\n",
        )
        .expect("write");
        let cfg = config(Some(&path)).await.expect("config");
        assert_eq!(cfg.cluster_url.to_string(), "http://127.0.0.1:6443/");
        assert_eq!(cfg.default_namespace, "gen3");
        client(Some(&path)).await.expect("client");

        let missing = dir.path().join("nope");
        let e = config(Some(&missing)).await.expect_err("missing file");
        let text = csoc_common::error::error_chain(&e);
        assert!(text.contains("nope"), "{text}");
        std::fs::write(&path, "apiVersion: v1\nkind: Config\nclusters: 3\n").expect("write");
        let e = config(Some(&path)).await.expect_err("bad file");
        assert!(!csoc_common::error::error_chain(&e).contains("s3cret"));
    }
}
