//! Taking the node's in-memory locks: one policy for a poisoned lock.
//!
//! A lock is poisoned when a thread panicked while holding it. Every lock these helpers take
//! guards state that is whole between statements (a map insert, a counter, a swap of a value),
//! so the panic cannot have left it half-changed: the guard is taken over and the node goes
//! on. The one lock whose holder writes in several steps, the Raft log's, is not taken here:
//! [`crate::store::LogStore`] turns its poisoning into a storage error instead.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, taking the guard over if a panicking holder poisoned it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Read-locks `lock`, taking the guard over if it is poisoned.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Write-locks `lock`, taking the guard over if it is poisoned.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_taken_over_with_its_value() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let r = std::sync::Arc::new(RwLock::new(2));
        let (m2, r2) = (m.clone(), r.clone());
        let _ = std::thread::spawn(move || {
            let _g = m2.lock();
            let _w = r2.write();
            panic!("poison both");
        })
        .join();
        assert!(m.is_poisoned() && r.is_poisoned());
        assert_eq!(*lock(&m), 1);
        assert_eq!(*read(&r), 2);
        *write(&r) = 3;
        assert_eq!(*read(&r), 3);
    }
}
