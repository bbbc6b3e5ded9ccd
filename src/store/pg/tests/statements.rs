//! A connection's kept statements: prepared once, forgotten with the connection.

use super::{Scratch, server};
use crate::store::pg::migrate::connect_for;
use crate::store::pg::sql::{Conn, Sql};

const COUNT: &str = "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1";

/// How many statements of this session have the text `sql`.
fn prepared(db: &mut Conn, sql: &str) -> i64 {
    db.query_one(COUNT, &[&sql]).unwrap().get(0)
}

#[test]
fn a_statement_run_again_is_prepared_once_and_again_after_a_reconnect() {
    let Some(url) = server("statements") else {
        return;
    };
    let scratch = Scratch::migrated(url.clone(), "statements");
    let mut db = Conn::new(connect_for(&url, &scratch.schema, "").unwrap());
    let sql = "SELECT $1::int8 + 1";
    for n in 0..5_i64 {
        let row = db.query_one(sql, &[&n]).unwrap();
        assert_eq!(row.get::<_, i64>(0), n + 1);
    }
    assert_eq!(prepared(&mut db, sql), 1, "five runs, one statement");
    // In a transaction too, the same statement serves.
    let mut tx = db.transaction().unwrap();
    assert_eq!(tx.query_one(sql, &[&41_i64]).unwrap().get::<_, i64>(0), 42);
    tx.commit().unwrap();
    assert_eq!(prepared(&mut db, sql), 1);
    // The server ends the session: the connection comes back without its statements,
    // and the next run prepares the statement again.
    let pid: i32 = db.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let mut other = scratch.client();
    let ended: bool = other
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(ended);
    assert!(db.query_one(sql, &[&1_i64]).is_err(), "the session is gone");
    // The client sees its connection closed once it has read the end of it.
    for _ in 0..100 {
        if db.is_closed() {
            break;
        }
        let _ = db.query_one(sql, &[&1_i64]);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(db.is_closed());
    db.reopen_if_closed(&url, &scratch.schema, "");
    assert!(!db.is_closed());
    assert_eq!(db.query_one(sql, &[&1_i64]).unwrap().get::<_, i64>(0), 2);
    assert_eq!(prepared(&mut db, sql), 1);
}

#[test]
fn a_bare_client_keeps_nothing() {
    let Some(url) = server("statements_bare") else {
        return;
    };
    let mut db = crate::store::pg::migrate::connect(&url).unwrap();
    let sql = "SELECT $1::int8 * 2";
    for _ in 0..3 {
        assert_eq!(
            Sql::query_one(&mut db, sql, &[&21_i64])
                .unwrap()
                .get::<_, i64>(0),
            42
        );
    }
    let left: i64 = Sql::query_one(&mut db, COUNT, &[&sql]).unwrap().get(0);
    assert_eq!(left, 0, "each statement closed after its run");
}
