//! The local model store: a redb database file.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{ModelStore, StoreError};

/// The table holding the entries (key → encoded entry).
pub const TABLE_NAME: &str = "flowstage-model-store";
const TABLE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new(TABLE_NAME);

/// A [`ModelStore`] in a local redb database file: survives a restart on the
/// same machine. Each write is one ACID transaction (crash-safe).
#[derive(Debug)]
pub struct LocalStore {
    path: PathBuf,
    /// Always `Some` until dropped (taken to close it under a guard).
    db: Option<Database>,
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        // Closing commits the allocator state, which redb may panic on in a
        // damaged file: never in the dropping thread.
        if let Some(db) = self.db.take() {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db))).is_err() {
                tracing::warn!(path = %self.path.display(), "local store: the database engine failed while closing the file (is it damaged?)");
            }
        }
    }
}

impl LocalStore {
    /// Opens the database at `path`, creating it when missing. A file that is
    /// not a redb database is an error (it is never overwritten).
    pub fn open(path: impl AsRef<Path>) -> Result<LocalStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = guarded(&path, "opening it", || {
            Database::create(&path).map_err(|e| local(&path, e))
        })?;
        Ok(LocalStore { path, db: Some(db) })
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or_else(|| StoreError::Damaged {
            path: self.path.clone(),
            what: "it was closed".into(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every entry of the table (none before the first write).
    fn read_all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let p = &self.path;
        let tx = self.db()?.begin_read().map_err(|e| local(p, e))?;
        let table = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(local(p, e)),
        };
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| local(p, e))? {
            let (k, v) = item.map_err(|e| local(p, e))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }
}

/// Runs `f` on the database; a panic of the database engine (a damaged file:
/// a flipped byte made redb index out of its pages) is
/// [`StoreError::Damaged`], not a panic of the caller.
fn guarded<T>(
    path: &Path,
    what: &str,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(StoreError::Damaged {
            path: path.to_path_buf(),
            what: format!("the database engine failed while {what}"),
        })
    })
}

fn local(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Local {
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    }
}

impl ModelStore for LocalStore {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn put_raw(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let p = &self.path;
        guarded(p, "writing to it", || {
            let tx = self.db()?.begin_write().map_err(|e| local(p, e))?;
            {
                let mut table = tx.open_table(TABLE).map_err(|e| local(p, e))?;
                for (k, v) in entries {
                    table
                        .insert(k.as_str(), v.as_slice())
                        .map_err(|e| local(p, e))?;
                }
            }
            tx.commit().map_err(|e| local(p, e))
        })
    }

    fn load_raw(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        guarded(&self.path, "reading it", || self.read_all())
    }
}
