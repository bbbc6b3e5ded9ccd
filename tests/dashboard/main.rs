//! The web dashboard (feature `dashboard`): every endpoint and every refusal over real HTTP
//! (`http`), and the page in a real headless Chromium (`browser`).

#![cfg(feature = "dashboard")]

mod browser;
mod http;
#[cfg(feature = "postgres")]
#[path = "../pg_common/mod.rs"]
mod pg_common;
#[cfg(feature = "postgres")]
mod postgres;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use taskspool::{Context, Options, Spool, Task, TaskError, TaskId};

/// What a user's script would put in its arguments to attack the page.
pub const HOSTILE: [&str; 2] = [
    "<script>window.pwned = 1</script>",
    "\"><img src=x onerror=\"window.pwned = 2\">",
];

/// Sends a mail; a mailbox named `fail…` fails its first attempt (a retry succeeds).
#[derive(Debug, Serialize, Deserialize)]
pub struct Mail {
    pub to: String,
}

impl Task for Mail {
    const NAME: &'static str = "mail.send";
    type Output = String;
    fn run(self, ctx: &Context) -> Result<String, TaskError> {
        if ctx.attempt() == 1 && self.to.starts_with("fail") {
            return Err(TaskError::fail(format!("no such mailbox: {}", self.to)));
        }
        Ok(format!("sent to {}", self.to))
    }
}

/// Runs until `RELEASE` is set (at most 60 s): a task that stays running.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hold;

/// Ends every `Hold`.
pub static RELEASE: AtomicBool = AtomicBool::new(false);

impl Task for Hold {
    const NAME: &'static str = "hold";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !RELEASE.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

/// Asks to be retried in an hour.
#[derive(Debug, Serialize, Deserialize)]
pub struct Later;

impl Task for Later {
    const NAME: &'static str = "later";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        Err(TaskError::retry_after(
            Duration::from_secs(3600),
            "come back later",
        ))
    }
}

/// A queue with tasks in every state but running: succeeded, failed (the first failed task
/// is returned, its arguments hostile), ready (on `bulk`, which nothing serves), scheduled,
/// retrying, waiting (a chain's second step), revoked and expired.
pub fn every_state(spool: &Spool) -> TaskId {
    let once = Options::new().max_retries(0);
    let failed = spool
        .enqueue_with(
            Mail {
                to: format!("fail {}", HOSTILE[0]),
            },
            once.clone(),
        )
        .unwrap();
    spool
        .enqueue_with(
            Mail {
                to: format!("fail {}", HOSTILE[1]),
            },
            once.clone(),
        )
        .unwrap();
    for i in 0..3 {
        spool
            .enqueue(Mail {
                to: format!("user{i}@example.com"),
            })
            .unwrap();
    }
    spool.enqueue(Later).unwrap();
    spool
        .worker()
        .register::<Mail>()
        .register::<Later>()
        .drain()
        .unwrap();
    let bulk = Options::new().queue("bulk");
    spool
        .enqueue_with(
            Mail {
                to: "bulk@example.com".into(),
            },
            bulk.clone(),
        )
        .unwrap();
    spool
        .enqueue_with(
            Mail {
                to: "soon@example.com".into(),
            },
            Options::new().countdown(Duration::from_secs(3600)),
        )
        .unwrap();
    spool
        .chain_with(
            Mail {
                to: "first@example.com".into(),
            },
            bulk.clone(),
        )
        .then(Mail {
            to: "second@example.com".into(),
        })
        .enqueue()
        .unwrap();
    let revoked = spool
        .enqueue_with(
            Mail {
                to: "revoked@example.com".into(),
            },
            bulk.clone(),
        )
        .unwrap();
    spool.revoke(revoked.id()).unwrap();
    spool
        .enqueue_with(
            Mail {
                to: "expired@example.com".into(),
            },
            Options::new().expires(Duration::from_millis(1)),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    spool.worker().register::<Mail>().drain().unwrap();
    failed.id()
}

/// Polls `check` until it holds, for up to 10 s.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The JSON of a body.
pub fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}
