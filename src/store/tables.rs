//! The machinery behind the table list in `schema`: the [`tables!`] macro declares each table
//! once, and from that one list come its definition, its id in write-ahead log records, its
//! accessor in a write transaction ([`Tables`](crate::store::schema::Tables), opened on first
//! use, every change logged), its replay, and the walk over every table that creates them in
//! a new file and checks their layout in an old one ([`TableVisitor`]).
//!
//! Adding a table is one line in `schema` plus its uses.

use redb::{Key, TableDefinition, Value};

use crate::error::Error;

/// Something done to every table of the file but `META`, whatever its key and value types.
pub(crate) trait TableVisitor {
    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), Error>;
}

/// Declares the file's tables: `id NAME accessor: Key => Value = "redb name";` each, with
/// its doc comment. See the module docs for what it generates.
macro_rules! tables {
    ($(
        $(#[doc = $doc:literal])*
        $id:literal $name:ident $accessor:ident: $k:ty => $v:ty = $table:literal;
    )*) => {
        $(
            $(#[doc = $doc])*
            pub(crate) const $name: redb::TableDefinition<'static, $k, $v> =
                redb::TableDefinition::new($table);
        )*

        /// The ids that name the tables in write-ahead log records. Never reused.
        pub(crate) mod table_id {
            $( pub(crate) const $name: u8 = $id; )*
        }

        /// Calls `visitor` with every table but `META`.
        pub(crate) fn each_table(
            visitor: &mut impl $crate::store::tables::TableVisitor,
        ) -> Result<(), $crate::error::Error> {
            $( visitor.visit($name)?; )*
            Ok(())
        }

        /// The tables of one write transaction, each opened on first use (a small group
        /// touches three of them, and every table opened costs a lookup and a flush at
        /// commit), with every change recorded in the transaction's redo record.
        pub(crate) struct Tables<'t> {
            txn: &'t redb::WriteTransaction,
            redo: $crate::store::redo::Redo,
            $( $accessor: Option<redb::Table<'t, $k, $v>>, )*
        }

        impl<'t> Tables<'t> {
            /// The tables of `txn`, recording into `redo`.
            pub(crate) fn new(
                txn: &'t redb::WriteTransaction,
                redo: $crate::store::redo::Redo,
            ) -> Tables<'t> {
                Tables { txn, redo, $( $accessor: None, )* }
            }

            /// The redo record of every change so far.
            pub(crate) fn redo(&mut self) -> &mut $crate::store::redo::Redo {
                &mut self.redo
            }

            /// Gives the redo record back (the tables are closed).
            pub(crate) fn into_redo(self) -> $crate::store::redo::Redo {
                self.redo
            }

            $(
                $(#[doc = $doc])*
                pub(crate) fn $accessor(
                    &mut self,
                ) -> Result<$crate::store::redo::Logged<'_, 't, $k, $v>, $crate::error::Error> {
                    let table = match self.$accessor.take() {
                        Some(table) => table,
                        None => $crate::store::errors::Db::db(self.txn.open_table($name))?,
                    };
                    Ok($crate::store::redo::Logged::new(
                        self.$accessor.insert(table),
                        &mut self.redo,
                        table_id::$name,
                    ))
                }
            )*

            /// Applies the row changes of one write-ahead log record, without recording them
            /// again.
            pub(crate) fn replay(&mut self, record: &[u8]) -> Result<(), $crate::error::Error> {
                let ops = $crate::store::redo::decode(record).ok_or_else(|| {
                    $crate::error::Error::storage(
                        "write-ahead log: a record with a valid checksum is malformed",
                    )
                })?;
                for op in ops {
                    let (table, key, value) = match op {
                        $crate::store::redo::Op::Put { table, key, value } => {
                            (table, key, Some(value))
                        }
                        $crate::store::redo::Op::Delete { table, key } => (table, key, None),
                    };
                    match table {
                        $( table_id::$name => self.$accessor()?.replay(key, value)?, )*
                        other => {
                            return Err($crate::error::Error::storage(format!(
                                "write-ahead log: a record names table {other}, which this \
                                 build does not have"
                            )));
                        }
                    }
                }
                Ok(())
            }
        }
    };
}
pub(crate) use tables;
