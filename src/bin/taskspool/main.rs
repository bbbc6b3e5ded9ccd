//! `taskspool`: a queue file, or a PostgreSQL queue, from the command line.
//!
//! Every command goes to the process that owns the file, through its control socket
//! (`Client`). With no owner, reads go to the file without writing to it (`Spool::inspect`),
//! and a command that changes the queue opens the file as its owner (and says so). In place
//! of the file, a `postgres://` URL (feature `postgres`) connects to that database's queue
//! as one more process, as any process there does.
//!
//! Exit codes: see `EXIT_CODES`.

mod print;
mod source;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use std::time::Duration;

use source::{Owner, Source, Target};
use taskspool::{Error, ErrorKind, MAX_PAGE, Options, Paging, TaskFilter, TaskId, TaskState};

/// The command line.
#[derive(Parser)]
#[command(
    name = "taskspool",
    version,
    about = "Look at and operate a taskspool queue (live or closed)",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Print JSON instead of tables (one document per command).
    #[arg(long, global = true)]
    json: bool,
    /// The schema of a PostgreSQL queue (when the queue is a `postgres://` URL).
    #[arg(
        long,
        global = true,
        env = "TASKSPOOL_POSTGRES_SCHEMA",
        default_value = "taskspool"
    )]
    postgres_schema: String,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 done; 1 the command failed; 2 bad usage (also a path \
with no queue file, or a change the task's state does not allow); 3 no such task; 4 the file \
is owned by a process that does not serve its socket; 5 not a usable queue file; 6 the queue \
is not running (tail).";

#[derive(Subcommand)]
enum Command {
    /// Task counts per queue and state.
    Stats {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
    },
    /// List tasks, oldest first (a page at a time: pass the printed `next` to --after).
    Ls {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
        /// Only tasks in this state (repeat for several).
        #[arg(long, value_enum)]
        state: Vec<State>,
        /// Only tasks on this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only tasks of this name.
        #[arg(long)]
        name: Option<String>,
        /// Only tasks this schedule enqueued.
        #[arg(long)]
        schedule: Option<String>,
        /// How many tasks (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Newest first.
        #[arg(long)]
        newest: bool,
        /// Continue after this task id (the `next` of the page before).
        #[arg(long)]
        after: Option<u64>,
    },
    /// One task: arguments, output, progress, attempts with their errors, times.
    Show {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
        /// The task id.
        id: u64,
    },
    /// The periodic schedules, with their next and last fire.
    Schedules {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
    },
    /// Run a failed, expired or revoked task again.
    Retry {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
        /// The task id.
        id: u64,
    },
    /// Revoke a task (a running one is asked to stop).
    Revoke {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
        /// The task id.
        id: u64,
    },
    /// Revoke every waiting task (scheduled, ready, retrying, waiting; not running ones) of a
    /// queue or task name, or of the whole file.
    Purge {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only tasks of this name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a finished task and its result now.
    Forget {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
        /// The task id.
        id: u64,
    },
    /// Stop claiming from a queue (also across restarts).
    Pause {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
        /// The queue.
        queue: String,
    },
    /// Claim from a paused queue again.
    Resume {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
        /// The queue.
        queue: String,
    },
    /// Enqueue a task by name with JSON arguments (like `celery call`); prints its id.
    Enqueue {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
        /// The task name (a task type's NAME).
        name: String,
        /// The arguments, as JSON.
        arguments: String,
        /// The queue.
        #[arg(long)]
        queue: Option<String>,
        /// The priority, 0 to 9.
        #[arg(long)]
        priority: Option<u8>,
        /// Run after this many seconds.
        #[arg(long)]
        countdown: Option<u64>,
    },
    /// Move every acknowledged change from the write-ahead log into the queue file itself
    /// (after it, a copy of the file alone is a complete backup).
    Checkpoint {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
    },
    /// Serve the web dashboard: through the owner's socket when the queue is live, read-only
    /// from the file when it is not (feature `dashboard`). Runs until interrupted.
    #[cfg(feature = "dashboard")]
    Dashboard {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
        /// Where to listen; an address other than a loopback one needs --token.
        #[arg(long, default_value = "127.0.0.1:5555")]
        listen: std::net::SocketAddr,
        /// The token that allows changes (retry, revoke, pause, resume, purge).
        #[arg(long, env = "TASKSPOOL_DASHBOARD_TOKEN")]
        token: Option<String>,
    },
    /// Print events as they happen, one JSON line each (the queue must be live).
    Tail {
        /// The queue file, or a PostgreSQL database (`postgres://…` or `host=… dbname=…`).
        file: PathBuf,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// A task state, as the command line names it.
#[derive(Clone, Copy, ValueEnum)]
enum State {
    Scheduled,
    Ready,
    Running,
    Retrying,
    Waiting,
    Succeeded,
    Failed,
    Expired,
    Revoked,
}

impl From<State> for TaskState {
    fn from(s: State) -> TaskState {
        match s {
            State::Scheduled => TaskState::Scheduled,
            State::Ready => TaskState::Ready,
            State::Running => TaskState::Running,
            State::Retrying => TaskState::Retrying,
            State::Waiting => TaskState::Waiting,
            State::Succeeded => TaskState::Succeeded,
            State::Failed => TaskState::Failed,
            State::Expired => TaskState::Expired,
            State::Revoked => TaskState::Revoked,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("taskspool: {}", one_line(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

fn run(cli: &Cli) -> Result<String, Error> {
    let json = cli.json;
    match &cli.command {
        Command::Stats { file } => {
            let stats = Source::read(&at(cli, file))?.stats()?;
            Ok(if json {
                print::json(&stats)
            } else {
                print::stats(&stats)
            })
        }
        Command::Ls {
            file,
            state,
            queue,
            name,
            schedule,
            limit,
            newest,
            after,
        } => {
            if !(1..=MAX_PAGE).contains(limit) {
                return Err(Error::InvalidOption(format!(
                    "--limit must be 1 to {MAX_PAGE}, not {limit}"
                )));
            }
            let mut filter = TaskFilter::new();
            for &s in state {
                filter = filter.state(s.into());
            }
            if let Some(q) = queue {
                filter = filter.queue(q);
            }
            if let Some(n) = name {
                filter = filter.name(n);
            }
            if let Some(s) = schedule {
                filter = filter.schedule(s);
            }
            let mut paging = Paging::first(*limit);
            if *newest {
                paging = paging.newest_first();
            }
            if let Some(after) = after {
                paging = paging.after(TaskId::from_u64(*after));
            }
            let page = Source::read(&at(cli, file))?.tasks(&filter, &paging)?;
            Ok(if json {
                print::json(&page)
            } else {
                print::page(&page)
            })
        }
        Command::Show { file, id } => {
            let status = Source::read(&at(cli, file))?.status(TaskId::from_u64(*id))?;
            Ok(if json {
                print::json(&status)
            } else {
                print::task(&status)
            })
        }
        Command::Schedules { file } => {
            let schedules = Source::read(&at(cli, file))?.schedules()?;
            Ok(if json {
                print::json(&schedules)
            } else {
                print::schedules(&schedules)
            })
        }
        Command::Retry { file, id } => {
            Owner::get(&at(cli, file))?.retry(TaskId::from_u64(*id))?;
            Ok(done(json, &format!("task {id} runs again")))
        }
        Command::Revoke { file, id } => {
            let what = Owner::get(&at(cli, file))?.revoke(TaskId::from_u64(*id))?;
            Ok(if json {
                print::json(&what)
            } else {
                format!("task {id}: {what:?}\n")
            })
        }
        Command::Purge { file, queue, name } => {
            let mut filter = TaskFilter::new();
            for state in [
                TaskState::Scheduled,
                TaskState::Ready,
                TaskState::Retrying,
                TaskState::Waiting,
            ] {
                filter = filter.state(state);
            }
            if let Some(q) = queue {
                filter = filter.queue(q);
            }
            if let Some(n) = name {
                filter = filter.name(n);
            }
            let revoked = Owner::get(&at(cli, file))?.revoke_where(filter)?;
            Ok(if json {
                print::json(&revoked)
            } else {
                format!("{} waiting tasks revoked\n", revoked.revoked)
            })
        }
        Command::Forget { file, id } => {
            Owner::get(&at(cli, file))?.forget(TaskId::from_u64(*id))?;
            Ok(done(json, &format!("task {id} forgotten")))
        }
        Command::Pause { file, queue } | Command::Resume { file, queue } => {
            let pause = matches!(cli.command, Command::Pause { .. });
            let changed = Owner::get(&at(cli, file))?.pause(queue, pause)?;
            let state = if pause { "paused" } else { "resumed" };
            let note = if changed { "" } else { " (it was already)" };
            Ok(done(json, &format!("queue {queue} {state}{note}")))
        }
        Command::Enqueue {
            file,
            name,
            arguments,
            queue,
            priority,
            countdown,
        } => {
            let arguments: serde_json::Value = serde_json::from_str(arguments)
                .map_err(|e| Error::InvalidOption(format!("the arguments are not JSON: {e}")))?;
            let mut options = Options::new();
            if let Some(q) = queue {
                options = options.queue(q);
            }
            if let Some(p) = priority {
                options = options.priority(*p);
            }
            if let Some(c) = countdown {
                options = options.countdown(Duration::from_secs(*c));
            }
            let id = Owner::get(&at(cli, file))?.enqueue(name, arguments, options)?;
            Ok(if json {
                print::json(&id)
            } else {
                format!("{id}\n")
            })
        }
        Command::Checkpoint { file } => {
            if at(cli, file).postgres_url().is_some() {
                return Err(Error::InvalidOption(
                    "checkpoint is for a queue file: PostgreSQL checkpoints its own log".into(),
                ));
            }
            Owner::get(&at(cli, file))?.checkpoint()?;
            Ok(done(json, &format!("{} checkpointed", file.display())))
        }
        #[cfg(feature = "dashboard")]
        Command::Dashboard {
            file,
            listen,
            token,
        } => {
            let mut options = taskspool::DashboardOptions::new().listen(*listen);
            if let Some(t) = token {
                options = options.token(t);
            }
            let dashboard = match Source::read(&at(cli, file))? {
                Source::Live(client) => client.serve_dashboard(options)?,
                Source::Closed(inspection) => {
                    eprintln!(
                        "taskspool: no process owns {}: serving it read-only",
                        file.display()
                    );
                    inspection.serve_dashboard(options)?
                }
                Source::Peer(spool) => spool.serve_dashboard(options)?,
            };
            println!("{}", dashboard.url());
            loop {
                std::thread::park();
            }
        }
        Command::Tail { file, count } => {
            let mut events = at(cli, file).events()?;
            let mut seen = 0;
            while count.is_none_or(|c| seen < c) {
                if let Some(event) = events.recv_timeout(Duration::from_secs(3600))? {
                    let line = serde_json::to_string(&event).unwrap_or_default();
                    println!("{line}");
                    seen += 1;
                }
            }
            Ok(String::new())
        }
    }
}

/// The queue `file` names, with the command line's PostgreSQL schema.
fn at<'a>(cli: &'a Cli, file: &'a Path) -> Target<'a> {
    Target::new(file, &cli.postgres_schema)
}

/// A change's confirmation: a line, or `{"done": "..."}`.
fn done(json: bool, what: &str) -> String {
    if json {
        print::json(&serde_json::json!({ "done": what }))
    } else {
        format!("{what}\n")
    }
}

/// The error in one line, with what to do.
fn one_line(e: &Error) -> String {
    let text = match e {
        Error::AlreadyOpen { path } => format!(
            "{} is owned by a running process that does not serve its control socket \
             (SpoolBuilder::control_socket(false)); stop it, or let it serve the socket",
            path.display()
        ),
        other => other.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn exit_code(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::NotFound => 3,
        ErrorKind::AlreadyOpen => 4,
        ErrorKind::BadFile => 5,
        ErrorKind::InvalidInput => 2,
        ErrorKind::NotRunning => 6,
        _ => 1,
    }
}
