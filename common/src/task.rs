//! Running futures side by side.

/// Runs every future on its own task, concurrently, and returns their
/// outputs in order; a task that panicked gives `None`.
pub async fn join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<Option<F::Output>>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.ok());
    }
    out
}
