//! [`Stats`] as Prometheus text ([`Spool::prometheus`](crate::Spool::prometheus)), for a
//! `/metrics` endpoint.

use std::fmt::Write as _;

use crate::metrics::TaskMetrics;
use crate::model::TaskState;
use crate::views::Stats;

/// A counter family: its name's middle, its help, and its value in a series.
type Counter = (&'static str, &'static str, fn(&TaskMetrics) -> u64);

/// `stats` as Prometheus text (exposition format 0.0.4): the tasks per queue and state, the
/// paused queues, and each series of `stats.metrics`.
pub(crate) fn prometheus(stats: &Stats) -> String {
    let mut out = String::new();
    let label = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "taskspool_tasks",
        "gauge",
        "Tasks in the file, by queue and state.",
    );
    for q in &stats.queues {
        for state in TaskState::ALL {
            let _ = writeln!(
                out,
                "taskspool_tasks{{queue=\"{}\",state=\"{state}\"}} {}",
                label(&q.name),
                q.count(state)
            );
        }
    }
    family(
        &mut out,
        "taskspool_queue_paused",
        "gauge",
        "1 if the queue is paused.",
    );
    for q in &stats.queues {
        let _ = writeln!(
            out,
            "taskspool_queue_paused{{queue=\"{}\"}} {}",
            label(&q.name),
            u8::from(q.paused)
        );
    }
    let counters: [Counter; 6] = [
        ("enqueued", "Tasks stored since the spool opened.", |m| {
            m.enqueued
        }),
        (
            "succeeded",
            "Tasks that succeeded since the spool opened.",
            |m| m.succeeded,
        ),
        (
            "failed",
            "Tasks that failed for good since the spool opened.",
            |m| m.failed,
        ),
        ("retried", "Attempts retried since the spool opened.", |m| {
            m.retried
        }),
        (
            "expired",
            "Tasks that expired since the spool opened.",
            |m| m.expired,
        ),
        ("revoked", "Tasks revoked since the spool opened.", |m| {
            m.revoked
        }),
    ];
    for (what, help, value) in counters {
        let name = format!("taskspool_tasks_{what}_total");
        family(&mut out, &name, "counter", help);
        for m in &stats.metrics {
            let _ = writeln!(
                out,
                "{name}{{queue=\"{}\",task=\"{}\"}} {}",
                label(&m.queue),
                label(&m.name),
                value(m)
            );
        }
    }
    let name = "taskspool_attempt_seconds";
    family(&mut out, name, "histogram", "How long attempts ran.");
    for m in &stats.metrics {
        let labels = format!("queue=\"{}\",task=\"{}\"", label(&m.queue), label(&m.name));
        for &(le, n) in &m.runtime.at_most_us {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{}\"}} {n}",
                le as f64 / 1e6
            );
        }
        let count = m.runtime.count;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            m.runtime.sum_us as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
    out
}
