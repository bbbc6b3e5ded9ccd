//! The schema's migrations, against a real server.

use super::{Scratch, server};
use crate::error::{Error, ErrorKind};
use crate::store::pg::migrate::{LATEST, Migrated, SchemaName, connect, migrate};

#[test]
fn a_new_schema_is_created_and_migrated_once() {
    let Some(url) = server("a_new_schema_is_created_and_migrated_once") else {
        return;
    };
    let scratch = Scratch::new(url, "fresh");
    let done = migrate(&mut scratch.client(), &scratch.schema).unwrap();
    assert_eq!(
        done,
        Migrated {
            from: 0,
            to: LATEST
        }
    );
    assert_eq!(
        scratch.tables(),
        [
            "attempt_errors",
            "event_listeners",
            "limits",
            "migrations",
            "open_chords",
            "paused_queues",
            "pools",
            "processes",
            "schedule_fires",
            "schedules",
            "tasks",
            "unique_keys",
            "workflows"
        ]
    );
    assert_eq!(scratch.versions(), [1]);
    // Again: nothing to do, nothing changed.
    let again = migrate(&mut scratch.client(), &scratch.schema).unwrap();
    assert_eq!(again, Migrated { from: 1, to: 1 });
    assert_eq!(scratch.versions(), [1]);
}

#[test]
fn processes_that_start_together_migrate_once() {
    let Some(url) = server("processes_that_start_together_migrate_once") else {
        return;
    };
    let scratch = Scratch::new(url, "together");
    let results: Vec<Migrated> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| migrate(&mut scratch.client(), &scratch.schema).unwrap()))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|m| m.from == 0).count(),
        1,
        "exactly one applied the migrations: {results:?}"
    );
    assert_eq!(scratch.versions(), [1]);
}

#[test]
fn a_schema_migrated_by_a_newer_taskspool_is_refused_unchanged() {
    let Some(url) = server("a_schema_migrated_by_a_newer_taskspool_is_refused_unchanged") else {
        return;
    };
    let scratch = Scratch::new(url, "newer");
    migrate(&mut scratch.client(), &scratch.schema).unwrap();
    scratch
        .client()
        .execute(
            &format!(
                "INSERT INTO {}.migrations (version, name) VALUES (99, 'from the future')",
                scratch.schema.quoted()
            ),
            &[],
        )
        .unwrap();
    let err = migrate(&mut scratch.client(), &scratch.schema).unwrap_err();
    let Error::NewerSchema {
        found, supported, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!((*found, *supported), (99, LATEST));
    assert_eq!(err.kind(), ErrorKind::BadFile);
    assert!(err.to_string().contains("upgrade taskspool"), "{err}");
    assert_eq!(scratch.versions(), [1, 99]);
}

#[test]
fn a_schema_name_must_be_a_plain_identifier() {
    for bad in [
        "",
        "Upper",
        "9lives",
        "pg_catalog",
        "a-b",
        "x\"; DROP TABLE y; --",
    ] {
        let err = SchemaName::new(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
    assert_eq!(
        SchemaName::new("taskspool").unwrap().quoted(),
        "\"taskspool\""
    );
}

#[test]
fn an_unreachable_server_is_a_storage_error_that_says_so() {
    let Err(err) = connect("host=127.0.0.1 port=1 user=nobody connect_timeout=2") else {
        panic!("nothing listens on port 1");
    };
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(
        err.to_string().contains("cannot connect to PostgreSQL"),
        "{err}"
    );
}

#[test]
fn a_malformed_connection_string_and_tls_are_refused_before_connecting() {
    let Err(err) = connect("postgres://app@db/jobs?connect_timeout=soon") else {
        panic!("not a timeout");
    };
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("connection string"), "{err}");
    let Err(err) = connect("host=127.0.0.1 port=1 user=app sslmode=require") else {
        panic!("TLS is not built in");
    };
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("sslmode=require"), "{err}");
}
