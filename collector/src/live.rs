//! [`Live`]: a value that a reload replaces while readers keep using the
//! one they loaded (what `arc-swap` does, with a lock held only to clone an
//! `Arc`).

use std::sync::{Arc, RwLock};

/// A shared, replaceable value.
pub struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live(self.0.clone())
    }
}

impl<T: Default> Default for Live<T> {
    fn default() -> Self {
        Live::new(T::default())
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.load().fmt(f)
    }
}

impl<T> Live<T> {
    /// A handle on `v`.
    pub fn new(v: T) -> Self {
        Live(Arc::new(RwLock::new(Arc::new(v))))
    }

    /// A handle on `v`, shared.
    pub fn from_arc(v: Arc<T>) -> Self {
        Live(Arc::new(RwLock::new(v)))
    }

    /// The value now.
    pub fn load(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the value for every handle.
    pub fn store(&self, v: T) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
    }
}

impl<T> From<T> for Live<T> {
    fn from(v: T) -> Self {
        Live::new(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handle_sees_the_new_value_and_old_loads_stay_valid() {
        let a = Live::new(1);
        let b = a.clone();
        let old = a.load();
        b.store(2);
        assert_eq!((*old, *a.load()), (1, 2));
    }
}
