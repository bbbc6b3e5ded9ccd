//! Quick start: a few real tasks in a queue file, a worker with app data, results, a retry,
//! and a follow-up task enqueued from a handler.
//!
//! Run with `cargo run --example quickstart`. The queue lives in `./data/quickstart.redb`;
//! run it twice and the ids keep counting: the file persists.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskspool::{Context, Options, RetryPolicy, Spool, Task, TaskError, TaskId};

/// App data the worker gives its tasks: words not to count.
struct StopWords(Vec<&'static str>);

/// Counts the words of a text, leaving out the worker's stop words.
#[derive(Serialize, Deserialize)]
struct WordCount {
    text: String,
}

impl Task for WordCount {
    const NAME: &'static str = "word_count";
    type Output = usize;

    fn run(self, ctx: &Context) -> Result<usize, TaskError> {
        let stop = ctx.data::<StopWords>()?;
        Ok(self
            .text
            .split_whitespace()
            .filter(|w| !stop.0.contains(w))
            .count())
    }
}

/// Fails on its first attempt (a flaky upstream), succeeds on the second.
#[derive(Serialize, Deserialize)]
struct FlakyFetch {
    url: String,
}

/// What a fetch returns: a summary, and the follow-up task it enqueued.
#[derive(Serialize, Deserialize)]
struct Fetched {
    summary: String,
    count_task: TaskId,
}

impl Task for FlakyFetch {
    const NAME: &'static str = "flaky_fetch";
    type Output = Fetched;

    fn run(self, ctx: &Context) -> Result<Fetched, TaskError> {
        if ctx.attempt() == 1 {
            return Err(TaskError::retry(format!("{}: connection reset", self.url)));
        }
        // A follow-up: count the words of what was fetched.
        let count = ctx.spool()?.enqueue(WordCount {
            text: format!("the feed at {}", self.url),
        })?;
        Ok(Fetched {
            summary: format!("fetched {} on attempt {}", self.url, ctx.attempt()),
            count_task: count.id(),
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all("data")?;
    let spool = Spool::open("data/quickstart.redb")?;
    let worker = spool
        .worker()
        .concurrency(2)
        .data(StopWords(vec!["the", "a"]))
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
    println!("task {:>4}: {}", fetch.id(), fetched.summary);
    println!(
        "           state={} attempts={} first error: {}",
        status.state,
        status.attempts,
        status.errors.first().map_or("none", |e| e.message.as_str())
    );
    let follow_up = spool.handle::<WordCount>(fetched.count_task);
    println!(
        "task {:>4}: {} words in the follow-up the fetch enqueued",
        follow_up.id(),
        follow_up.wait(Duration::from_secs(10))?
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
