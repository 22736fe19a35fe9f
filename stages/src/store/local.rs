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
    db: Database,
}

impl LocalStore {
    /// Opens the database at `path`, creating it when missing. A file that is
    /// not a redb database is an error (it is never overwritten).
    pub fn open(path: impl AsRef<Path>) -> Result<LocalStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path).map_err(|e| local(&path, e))?;
        Ok(LocalStore { path, db })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
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
        let tx = self.db.begin_write().map_err(|e| local(p, e))?;
        {
            let mut table = tx.open_table(TABLE).map_err(|e| local(p, e))?;
            for (k, v) in entries {
                table
                    .insert(k.as_str(), v.as_slice())
                    .map_err(|e| local(p, e))?;
            }
        }
        tx.commit().map_err(|e| local(p, e))
    }

    fn load_raw(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let p = &self.path;
        let tx = self.db.begin_read().map_err(|e| local(p, e))?;
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
