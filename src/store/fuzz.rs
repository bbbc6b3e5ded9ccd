//! The storage side of the fuzz entry points (see `crate::fuzzing`): record decoding and log
//! replay, on arbitrary bytes.

use redb::Database;
use redb::backends::InMemoryBackend;

use crate::store::errors::Db;
use crate::store::flow::FlowRecord;
use crate::store::record::TaskRecord;
use crate::store::redo::{self, Redo};
use crate::store::replay::{self, Expect};
use crate::store::schedules::ScheduleRecord;
use crate::store::schema::{Tables, each_table};
use crate::store::tables::TableVisitor;

/// Decodes `data` as a task record and as a schedule record. What decodes encodes again, and
/// decodes back to what encodes the same.
pub(crate) fn record(data: &[u8]) {
    if let Ok(rec) = TaskRecord::decode(data) {
        let bytes = rec.encode().expect("a decoded record encodes");
        let again = TaskRecord::decode(&bytes).expect("an encoded record decodes");
        assert_eq!(again.encode().expect("it encodes again"), bytes);
    }
    if let Ok(rec) = ScheduleRecord::decode(data) {
        let bytes = rec.encode().expect("a decoded schedule encodes");
        let again = ScheduleRecord::decode(&bytes).expect("an encoded schedule decodes");
        assert_eq!(again, rec);
    }
    if let Ok(rec) = crate::store::codec::decode::<FlowRecord>(data) {
        let bytes = crate::store::codec::encode(&rec).expect("a decoded limit encodes");
        let again: FlowRecord =
            crate::store::codec::decode(&bytes).expect("an encoded limit decodes");
        assert_eq!(again, rec);
    }
}

/// Reads `data` as a log under each kind of expectation (the generation taken from its
/// first header, so that its records can match), and decodes the rows of the records it
/// would replay. Errors are fine; a panic or a hang is not.
pub(crate) fn log(data: &[u8]) {
    scan_all(data, |_| {});
}

/// As [`log`], and applies the records to a queue file in memory.
pub(crate) fn replay(data: &[u8]) {
    scan_all(data, apply);
}

fn scan_all(data: &[u8], mut then: impl FnMut(&[&[u8]])) {
    let generation = data
        .get(8..16)
        .and_then(|g| g.try_into().ok())
        .map_or(1, u64::from_le_bytes);
    let expects = [
        Expect {
            generation,
            previous: Some(generation ^ 1),
            closed: false,
            strict: true,
        },
        Expect {
            generation,
            previous: None,
            closed: true,
            strict: true,
        },
        Expect {
            generation,
            previous: None,
            closed: false,
            strict: false,
        },
    ];
    for expect in &expects {
        let scanned = replay::scan(Some(data), expect);
        for record in &scanned.records {
            let _ = redo::decode(record);
        }
        if expect.strict && !expect.closed {
            then(&scanned.records);
        }
    }
}

/// Applies log records to a fresh queue file in memory.
fn apply(records: &[&[u8]]) {
    if records.is_empty() {
        return;
    }
    struct Create<'a>(&'a redb::WriteTransaction);
    impl TableVisitor for Create<'_> {
        fn visit<K: redb::Key + 'static, V: redb::Value + 'static>(
            &mut self,
            table: redb::TableDefinition<'static, K, V>,
        ) -> Result<(), crate::error::Error> {
            self.0.open_table(table).map(drop).db()
        }
    }
    let Ok(db) = Database::builder().create_with_backend(InMemoryBackend::new()) else {
        return;
    };
    let Ok(txn) = db.begin_write() else {
        return;
    };
    if each_table(&mut Create(&txn)).is_err() {
        return;
    }
    let mut tables = Tables::new(&txn, Redo::default());
    for record in records {
        if tables.replay(record).is_err() {
            break;
        }
    }
}
