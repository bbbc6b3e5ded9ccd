//! Quick start: a few real tasks in a queue file, a worker, results, and a retry.
//!
//! Run with `cargo run --example quickstart`. The queue lives in `./data/quickstart.redb`;
//! run it twice and the ids keep counting: the file persists.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskspool::{Context, Options, RetryPolicy, Spool, Task, TaskError};

/// Counts the words of a text.
#[derive(Serialize, Deserialize)]
struct WordCount {
    text: String,
}

impl Task for WordCount {
    const NAME: &'static str = "word_count";
    type Output = usize;

    fn run(self, _ctx: &Context) -> Result<usize, TaskError> {
        Ok(self.text.split_whitespace().count())
    }
}

/// Fails on its first attempt (a flaky upstream), succeeds on the second.
#[derive(Serialize, Deserialize)]
struct FlakyFetch {
    url: String,
}

impl Task for FlakyFetch {
    const NAME: &'static str = "flaky_fetch";
    type Output = String;

    fn run(self, ctx: &Context) -> Result<String, TaskError> {
        if ctx.attempt() == 1 {
            return Err(TaskError::retry(format!("{}: connection reset", self.url)));
        }
        Ok(format!("fetched {} on attempt {}", self.url, ctx.attempt()))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all("data")?;
    let spool = Spool::open("data/quickstart.redb")?;
    let worker = spool
        .worker()
        .concurrency(2)
        .register::<WordCount>()
        .register::<FlakyFetch>()
        .start()?;

    let texts = [
        "the quick brown fox",
        "jumps over",
        "the lazy dog again today",
    ];
    let counts = spool.enqueue_many(texts.iter().map(|t| WordCount {
        text: t.to_string(),
    }))?;
    let fetch = spool.enqueue_with(
        FlakyFetch {
            url: "https://example.com/feed".into(),
        },
        Options::new()
            .priority(9)
            .retry_policy(RetryPolicy::fixed(Duration::from_millis(200))),
    )?;

    for (text, handle) in texts.iter().zip(&counts) {
        let words = handle.wait(Duration::from_secs(10))?;
        println!("task {:>4}: {words} words in {text:?}", handle.id());
    }
    let fetched = fetch.wait(Duration::from_secs(10))?;
    let status = fetch.status()?;
    println!("task {:>4}: {fetched}", fetch.id());
    println!(
        "           state={} attempts={} first error: {}",
        status.state,
        status.attempts,
        status.errors.first().map_or("none", |e| e.message.as_str())
    );

    worker.shutdown(Duration::from_secs(10))?;
    let stats = spool.stats()?;
    for q in &stats.queues {
        println!(
            "queue {:?}: {} succeeded, {} failed (kept for the results TTL)",
            q.name,
            q.count(taskspool::TaskState::Succeeded),
            q.count(taskspool::TaskState::Failed)
        );
    }
    Ok(())
}
