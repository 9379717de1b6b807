//! Process signals: shutdown (SIGINT, SIGTERM) and reload (SIGHUP).

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT, shutting down"),
                    _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot install SIGTERM handler; only SIGINT stops the process");
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("received SIGINT, shutting down");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs `reload` on every SIGHUP (Unix), as Prometheus does, until `stop`
/// resolves; `what` names it in the log. Where SIGHUP cannot be listened
/// for, says so once (POST /-/reload still works).
pub fn spawn_on_sighup<S, F, Fut>(what: &'static str, stop: S, mut reload: F)
where
    S: std::future::Future<Output = ()> + Send + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    #[cfg(unix)]
    tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /-/reload");
                return;
            }
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                got = hup.recv() => if got.is_none() { return },
            }
            tracing::info!("SIGHUP: {what}");
            reload().await;
        }
    });
    #[cfg(not(unix))]
    let _ = (what, stop, reload);
}
