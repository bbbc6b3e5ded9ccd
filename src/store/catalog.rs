//! Queue names and task names interned as small integers, so the ready index can be keyed by
//! `(queue, task name, priority, seq)` and a worker scans only the tasks it can run.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::error::Error;
use crate::store::errors::Db;
use crate::store::redo::Logged;
use crate::store::schema::{NAMES, QUEUES};

/// One name ↔ id table, mirrored in memory by the writer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interned {
    by_name: HashMap<Arc<str>, u32>,
    by_id: HashMap<u32, Arc<str>>,
}

impl Interned {
    fn load(txn: &WriteTransaction, def: TableDefinition<&str, u32>) -> Result<Interned, Error> {
        Interned::read(&txn.open_table(def).db()?)
    }

    /// The names of `table`.
    fn read(table: &impl ReadableTable<&'static str, u32>) -> Result<Interned, Error> {
        let mut map = Interned::default();
        for entry in table.iter().db()? {
            let (name, id) = entry.db()?;
            map.insert(name.value(), id.value());
        }
        Ok(map)
    }

    fn insert(&mut self, name: &str, id: u32) {
        let name: Arc<str> = Arc::from(name);
        self.by_id.insert(id, name.clone());
        self.by_name.insert(name, id);
    }

    /// How many names there are.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every (id, name).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Arc<str>)> {
        self.by_id.iter().map(|(&id, name)| (id, name))
    }

    /// The id of a name, if it has one.
    pub(crate) fn id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The name of an id, if it has one.
    pub(crate) fn lookup(&self, id: u32) -> Option<&Arc<str>> {
        self.by_id.get(&id)
    }

    /// The name of an id.
    pub(crate) fn name(&self, id: u32) -> Arc<str> {
        self.by_id
            .get(&id)
            .cloned()
            .unwrap_or_else(|| Arc::from("?"))
    }

    /// The id of `name`, assigned (and stored in `table`) on first use.
    pub(crate) fn intern(
        &mut self,
        name: &str,
        table: &mut Logged<'_, '_, &'static str, u32>,
    ) -> Result<u32, Error> {
        if let Some(id) = self.id(name) {
            return Ok(id);
        }
        let id = self.by_id.keys().max().map_or(1, |m| m + 1);
        table.insert(name, id)?;
        self.insert(name, id);
        Ok(id)
    }
}

/// Every interned name the writer knows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    pub queues: Interned,
    pub names: Interned,
}

impl Catalog {
    pub(crate) fn load(txn: &WriteTransaction) -> Result<Catalog, Error> {
        Ok(Catalog {
            queues: Interned::load(txn, QUEUES)?,
            names: Interned::load(txn, NAMES)?,
        })
    }

    /// The catalog as a snapshot holds it.
    pub(crate) fn read(read: &redb::ReadTransaction) -> Result<Catalog, Error> {
        Ok(Catalog {
            queues: Interned::read(&read.open_table(QUEUES).db()?)?,
            names: Interned::read(&read.open_table(NAMES).db()?)?,
        })
    }
}
