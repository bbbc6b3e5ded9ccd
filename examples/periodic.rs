//! Delayed and periodic tasks: a countdown, an expiry, an interval schedule and a crontab
//! schedule in a time zone, all stored in the queue file.
//!
//! Run with `cargo run --example periodic`. It runs for about five seconds.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use taskspool::{Context, Options, Schedule, Spool, Task, TaskError};

/// Prints a line saying which schedule fired it (if any) and how late it started.
#[derive(Serialize, Deserialize)]
struct Report {
    label: String,
}

impl Task for Report {
    const NAME: &'static str = "report";
    type Output = ();

    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        let now = SystemTime::now();
        match (ctx.schedule(), ctx.fire_time()) {
            (Some(schedule), Some(fire)) => {
                let late = now.duration_since(fire).unwrap_or_default();
                println!(
                    "[{}] {} (schedule {schedule:?}, fired for {} ms, started {:.1} ms late)",
                    stamp(now),
                    self.label,
                    fire.duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis(),
                    late.as_secs_f64() * 1000.0
                );
            }
            _ => println!("[{}] {}", stamp(now), self.label),
        }
        Ok(())
    }
}

fn stamp(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    format!("{}.{:03}", ms / 1000 % 100, ms % 1000)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spool = Spool::temporary()?;
    let worker = spool.worker().concurrency(2).register::<Report>().start()?;

    // Declaring is an upsert: running this at every start changes nothing after the first.
    spool.schedule(
        "heartbeat",
        Schedule::every(Duration::from_secs(1)),
        Report {
            label: "heartbeat".into(),
        },
    )?;
    spool.schedule(
        "paris-morning",
        Schedule::cron("0 6 * * *")?.tz("Europe/Paris"),
        Report {
            label: "good morning, Paris".into(),
        },
    )?;
    for info in spool.schedules()? {
        let next = info
            .next_fire
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .map_or("never".to_string(), |d| {
                format!("in {:.1} s", d.as_secs_f64())
            });
        println!(
            "schedule {:?}: {} → next fire {next}",
            info.name, info.schedule
        );
    }

    let started = Instant::now();
    spool.enqueue_with(
        Report {
            label: "countdown of 1500 ms is over".into(),
        },
        Options::new().countdown(Duration::from_millis(1500)),
    )?;
    let expiring = spool.enqueue_with(
        Report {
            label: "this never prints: no worker serves its queue before it expires".into(),
        },
        Options::new()
            .queue("nightly")
            .expires(Duration::from_millis(2500)),
    )?;

    std::thread::sleep(Duration::from_secs(5));
    let status = expiring.status()?;
    println!(
        "after {:.1} s the expiring task is {} ({})",
        started.elapsed().as_secs_f64(),
        status.state,
        status.errors.first().map_or("", |e| e.message.as_str())
    );
    worker.shutdown(Duration::from_secs(5))?;
    Ok(())
}
