//! A live queue reached from another process (`Client`), with the owner a real child
//! process: the spool's calls through its control socket, an enqueue acknowledged durable by
//! the owner, events, and the owner's answer to clients that break the protocol — each
//! connection errs alone, and the owner goes on serving.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use serde_json::{Value, json};
use taskspool::{Client, ErrorKind, Event, Paging, TaskFilter};

use super::*;

fn socket(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sock", path.display()))
}

/// Sends one frame of `body`.
fn send(stream: &mut UnixStream, body: &[u8]) {
    stream
        .write_all(&(body.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(body).unwrap();
}

/// The next frame's JSON, or `None` at the end of the stream.
fn frame(stream: &mut UnixStream) -> Option<Value> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(serde_json::from_slice(&body).unwrap())
}

fn raw(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(socket(path)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

#[test]
fn a_client_in_another_process_uses_the_live_queue() {
    let (_dir, path) = queue_path();
    let (mut child, lines) = spawn_running("serve", &path, 0);
    let mode = std::fs::metadata(socket(&path))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is private");
    // The file is owned: opening it here is refused, a client goes through the owner.
    assert!(matches!(Spool::open(&path), Err(Error::AlreadyOpen { .. })));
    let client = Client::connect(&path).unwrap();
    let mut events = client.events(1_000).unwrap();

    let id = client
        .enqueue_json("test.add", json!({ "a": 2, "b": 3 }), Options::new())
        .unwrap();
    eventually("the owner's worker ran it", || {
        client.status(id).unwrap().state == TaskState::Succeeded
    });
    assert_eq!(client.status(id).unwrap().output, Some(json!(5)));
    let page = client
        .tasks(
            &TaskFilter::new().state(TaskState::Succeeded),
            &Paging::first(10),
        )
        .unwrap();
    assert_eq!(
        page.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![id]
    );
    assert_eq!(client.stats().unwrap().count(TaskState::Succeeded), 1);
    assert!(client.schedules().unwrap().is_empty());
    let missing = client.pause_schedule("nightly").unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    let not_a_workflow = client.workflow_status(id).unwrap_err();
    assert!(
        matches!(not_a_workflow, Error::NotFound(_)),
        "{not_a_workflow:?}"
    );
    assert!(matches!(
        client.status(TaskId::from_u64(99)),
        Err(Error::NotFound(_))
    ));
    let many = client
        .enqueue_many_json(
            "test.add",
            (0..100).map(|a| json!({ "a": a, "b": 1 })).collect(),
            Options::new().queue("elsewhere"),
        )
        .unwrap();
    assert_eq!(many.len(), 100);
    assert!(many.windows(2).all(|w| w[1].as_u64() == w[0].as_u64() + 1));
    assert_eq!(
        client.status(many[99]).unwrap().arguments,
        Some(json!({ "a": 99, "b": 1 }))
    );
    let bad = client
        .enqueue_json("", json!({}), Options::new())
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidInput, "{bad}");

    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        match events.recv_timeout(WAIT).unwrap() {
            Some(Event::Enqueued(t)) if t.id == id => kinds.push("enqueued"),
            Some(Event::Started(t)) if t.id == id => kinds.push("started"),
            Some(Event::Succeeded(t)) if t.id == id => kinds.push("succeeded"),
            Some(other) => panic!("{other:?}"),
            None => panic!("no event within {WAIT:?}: {kinds:?}"),
        }
    }
    assert_eq!(kinds, ["enqueued", "started", "succeeded"]);

    // An enqueue acknowledged to the client is durable: it survives the owner's kill -9.
    let id = client
        .enqueue_json("test.nobody", json!({}), Options::new())
        .unwrap();
    kill_and_drain(&mut child, &lines, |_| {});
    assert!(matches!(
        Client::connect(&path),
        Err(Error::NotRunning { .. })
    ));
    let spool = Spool::open(&path).unwrap();
    assert_eq!(spool.status(id).unwrap().name, "test.nobody");
}

/// A client waits as a handle does: woken by the owner's commit of the result, with the
/// owner's own errors for a failed, revoked, unknown or unfinished task.
#[test]
fn a_client_waits_for_results_in_the_owner() {
    let (_dir, path) = queue_path();
    let (_child, _lines) = spawn_running("serve", &path, 0);
    let client = Client::connect(&path).unwrap();

    let id = client.enqueue(Add { a: 20, b: 22 }).unwrap();
    assert_eq!(client.wait::<Add>(id, WAIT).unwrap(), 42);
    assert_eq!(client.wait_json(id, WAIT).unwrap(), json!(42));

    // A wait that starts before the task can run is answered when it has run.
    assert!(client.pause_queue("default").unwrap());
    let later = client.enqueue(Add { a: 1, b: 1 }).unwrap();
    let waiting = {
        let path = path.clone();
        std::thread::spawn(move || Client::connect(&path).unwrap().wait::<Add>(later, WAIT))
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(!waiting.is_finished(), "nothing ran yet");
    assert!(client.resume_queue("default").unwrap());
    assert_eq!(waiting.join().unwrap().unwrap(), 2);

    let failed = client
        .enqueue(Scripted::new("remote", [Step::Fail]))
        .unwrap();
    match client.wait::<Scripted>(failed, WAIT) {
        Err(Error::TaskFailed(failure)) => {
            assert_eq!(failure.id, failed);
            assert_eq!(failure.message, "gave up on attempt 1");
            assert_eq!(failure.errors.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    let nobody = client
        .enqueue_with(Add { a: 0, b: 0 }, Options::new().queue("nobody"))
        .unwrap();
    let started = Instant::now();
    assert!(matches!(
        client.wait::<Add>(nobody, Duration::from_millis(200)),
        Err(Error::Timeout(t)) if t == nobody
    ));
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.revoke(nobody).unwrap(), taskspool::Revoke::Revoked);
    assert!(matches!(
        client.wait_json(nobody, WAIT),
        Err(Error::TaskRevoked(t)) if t == nobody
    ));
    let wrong = client.wait::<Scripted>(id, WAIT).unwrap_err();
    assert_eq!(wrong.kind(), ErrorKind::InvalidInput, "{wrong}");
    assert!(wrong.to_string().contains("test.add"), "{wrong}");
    assert!(matches!(
        client.wait_json(TaskId::from_u64(999), WAIT),
        Err(Error::NotFound(_))
    ));
}

/// Limits, bulk retries, schedules and checkpoints are the owner's, from a client too.
#[test]
fn a_client_controls_limits_retries_and_checkpoints() {
    let (dir, path) = queue_path();
    let (_child, _lines) = spawn_running("serve", &path, 0);
    let client = Client::connect(&path).unwrap();

    let limit = taskspool::Limit::queue("mail").concurrency(2).unwrap();
    assert!(client.limit(limit.clone()).unwrap());
    assert_eq!(client.limits().unwrap(), vec![limit]);
    assert!(
        client
            .remove_limit(taskspool::LimitTarget::Queue("mail".into()))
            .unwrap()
    );
    assert!(client.limits().unwrap().is_empty());
    let bad = client.limit(taskspool::Limit::queue("mail")).unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidInput, "{bad}");

    let failed = client
        .enqueue_many_with(
            (0..3).map(|_| Scripted::new("retried", [Step::Fail, Step::Succeed])),
            Options::new(),
        )
        .unwrap();
    for &id in &failed {
        assert!(matches!(
            client.wait::<Scripted>(id, WAIT),
            Err(Error::TaskFailed(_))
        ));
    }
    let again = client
        .retry_where(&TaskFilter::new().state(TaskState::Failed))
        .unwrap();
    assert_eq!(again, 3);
    for &id in &failed {
        assert_eq!(client.wait::<Scripted>(id, WAIT).unwrap(), 2);
    }
    assert!(!client.unschedule("nightly").unwrap());

    // After a checkpoint the queue file alone holds every acknowledged task: a copy without
    // its log (a backup) has them, once opened accepting that it has no log.
    let ids = client
        .enqueue_many_with(
            (0..50).map(|a| Add { a, b: 0 }),
            Options::new().queue("nobody"),
        )
        .unwrap();
    client.flush().unwrap();
    client.checkpoint().unwrap();
    let copy = dir.path().join("backup.redb");
    std::fs::copy(&path, &copy).unwrap();
    assert!(matches!(Spool::inspect(&copy), Err(Error::Corrupt { .. })));
    let backup = Spool::builder()
        .accept_log_damage()
        .control_socket(false)
        .open(&copy)
        .unwrap();
    for id in ids {
        assert_eq!(backup.status(id).unwrap().state, TaskState::Ready);
    }
}

#[test]
fn a_closed_queue_is_not_running() {
    let (_dir, path) = queue_path();
    drop(Spool::open(&path).unwrap());
    assert!(!socket(&path).exists(), "the socket goes with its owner");
    let err = Client::connect(&path).unwrap_err();
    assert!(matches!(err, Error::NotRunning { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::NotRunning);
}

/// Another protocol version, a malformed frame, an oversized one, a first frame that is no
/// hello, a client that leaves mid-frame: each connection hears why (where it still can) and
/// is closed, and the owner serves the next client as before.
#[test]
fn clients_that_break_the_protocol_are_disconnected_and_the_owner_goes_on() {
    let (_dir, path) = queue_path();
    let (_child, _lines) = spawn_running("serve", &path, 0);

    let mut other_version = raw(&path);
    send(&mut other_version, br#"{"type":"hello","protocol":99}"#);
    let refused = frame(&mut other_version).unwrap();
    assert_eq!(refused["type"], "refused", "{refused}");
    assert_eq!(refused["error"]["kind"], "protocol");
    assert!(refused["error"]["message"].as_str().unwrap().contains("99"));
    assert!(frame(&mut other_version).is_none(), "then closed");

    let mut malformed = raw(&path);
    send(&mut malformed, b"{ this is not json");
    let closing = frame(&mut malformed).unwrap();
    assert_eq!(closing["type"], "closing", "{closing}");
    assert!(frame(&mut malformed).is_none());

    let mut oversized = raw(&path);
    oversized.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let closing = frame(&mut oversized).unwrap();
    assert!(
        closing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit"),
        "{closing}"
    );
    assert!(frame(&mut oversized).is_none());

    let mut no_hello = raw(&path);
    send(
        &mut no_hello,
        br#"{"type":"call","id":1,"call":{"verb":"stats"}}"#,
    );
    assert_eq!(frame(&mut no_hello).unwrap()["type"], "closing");

    let mut leaves = raw(&path);
    leaves.write_all(&100u32.to_be_bytes()).unwrap();
    leaves.write_all(b"{\"type\":").unwrap();
    drop(leaves);

    // A client that sends calls and never reads the replies holds its own connection only.
    let mut deaf = raw(&path);
    deaf.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    send(&mut deaf, br#"{"type":"hello","protocol":1}"#);
    for id in 0..2_000 {
        let call = format!(r#"{{"type":"call","id":{id},"call":{{"verb":"stats"}}}}"#);
        if deaf.write_all(&(call.len() as u32).to_be_bytes()).is_err()
            || deaf.write_all(call.as_bytes()).is_err()
        {
            break;
        }
    }

    // A client that pipelines enqueues and reads none of the replies fills its socket (a few
    // hundred replies), and is disconnected then: by the writer's thread, which writes a
    // deferred reply without waiting, or by its connection's thread after the reply timeout.
    // Its writes fail as on a closed connection, not by timing out.
    let mut deaf_enqueuer = raw(&path);
    deaf_enqueuer
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    send(&mut deaf_enqueuer, br#"{"type":"hello","protocol":1}"#);
    let mut sent = 0u64;
    let refused = loop {
        let call = format!(
            r#"{{"type":"call","id":{sent},"call":{{"verb":"enqueue","name":"test.nobody","arguments":{{}},"options":{{}}}}}}"#
        );
        let mut bytes = (call.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(call.as_bytes());
        if let Err(e) = deaf_enqueuer.write_all(&bytes) {
            break e;
        }
        sent += 1;
    };
    assert!(
        !matches!(
            refused.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "after {sent} calls: {refused:?}"
    );

    let client = Client::connect(&path).unwrap();
    let id = client
        .enqueue_json("test.add", json!({ "a": 1, "b": 1 }), Options::new())
        .unwrap();
    eventually("the owner still runs tasks", || {
        client.status(id).unwrap().state == TaskState::Succeeded
    });
    drop(deaf);
}
