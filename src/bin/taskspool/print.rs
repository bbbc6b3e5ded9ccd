//! What the commands print: tables for people, JSON for scripts.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde::Serialize;
use taskspool::{ScheduleInfo, Stats, TaskPage, TaskState, TaskStatus};

/// A view as pretty JSON, with a final newline.
pub fn json(value: &impl Serialize) -> String {
    match serde_json::to_string_pretty(value) {
        Ok(text) => text + "\n",
        Err(e) => format!("{{\"error\": \"cannot print as JSON: {e}\"}}\n"),
    }
}

fn time(t: Option<SystemTime>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        },
    )
}

/// Rows as columns, each as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, header.to_vec());
    for row in rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    out
}

pub fn stats(stats: &Stats) -> String {
    let mut header = vec!["queue"];
    let states: Vec<String> = TaskState::ALL.iter().map(|s| s.to_string()).collect();
    header.extend(states.iter().map(String::as_str));
    header.push("paused");
    let rows: Vec<Vec<String>> = stats
        .queues
        .iter()
        .map(|q| {
            let mut row = vec![q.name.clone()];
            row.extend(TaskState::ALL.iter().map(|&s| q.count(s).to_string()));
            row.push(if q.paused { "yes" } else { "" }.to_string());
            row
        })
        .collect();
    let mut out = table(&header, &rows);
    for (name, n) in &stats.unregistered {
        let _ = writeln!(out, "waiting for a worker that knows {name}: {n}");
    }
    out
}

pub fn page(page: &TaskPage) -> String {
    let rows: Vec<Vec<String>> = page
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.state.to_string(),
                t.queue.clone(),
                t.name.clone(),
                t.attempts.to_string(),
                time(Some(t.enqueued_at)),
                t.errors
                    .last()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "id",
            "state",
            "queue",
            "name",
            "attempts",
            "enqueued",
            "last error",
        ],
        &rows,
    );
    if let Some(next) = page.next {
        let _ = writeln!(out, "next: --after {next}");
    }
    out
}

pub fn task(t: &TaskStatus) -> String {
    let mut out = String::new();
    let json = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map_or_else(|| "-".to_string(), |v| v.to_string())
    };
    let _ = writeln!(out, "id:          {}", t.id);
    let _ = writeln!(out, "name:        {}", t.name);
    let _ = writeln!(out, "queue:       {} (priority {})", t.queue, t.priority);
    let _ = writeln!(out, "state:       {}", t.state);
    let _ = writeln!(
        out,
        "attempts:    {} (retries allowed: {})",
        t.attempts, t.max_retries
    );
    let _ = writeln!(out, "enqueued:    {}", time(Some(t.enqueued_at)));
    let _ = writeln!(out, "due:         {}", time(Some(t.due_at)));
    let _ = writeln!(out, "started:     {}", time(t.started_at));
    let _ = writeln!(out, "finished:    {}", time(t.finished_at));
    let _ = writeln!(out, "expires:     {}", time(t.expires_at));
    if let Some(s) = &t.schedule {
        let _ = writeln!(out, "schedule:    {s} (fire {})", time(t.fire_time));
    }
    let _ = writeln!(out, "arguments:   {}", json(&t.arguments));
    let _ = writeln!(out, "output:      {}", json(&t.output));
    let _ = writeln!(out, "progress:    {}", json(&t.progress));
    for e in &t.errors {
        // The kind's name as JSON spells it (`error`, `panic`, `time_limit`…).
        let kind = serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "attempt {}:   {kind} at {}: {}",
            e.attempt,
            time(Some(e.at)),
            e.message
        );
    }
    out
}

pub fn schedules(schedules: &[ScheduleInfo]) -> String {
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.schedule.clone(),
                s.task.clone(),
                s.queue.clone(),
                time(s.next_fire),
                time(s.last_fire),
                if s.paused { "yes" } else { "" }.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "name",
            "schedule",
            "task",
            "queue",
            "next fire",
            "last fire",
            "paused",
        ],
        &rows,
    )
}
