//! The in-memory model store: a map in the process, lost on restart.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use super::{ModelStore, StoreError};

/// A [`ModelStore`] in memory (the default): it lives as long as the process
/// (and can be shared by servers started one after the other in it).
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ModelStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn put_raw(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        for (k, v) in entries {
            map.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    fn load_raw(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}
