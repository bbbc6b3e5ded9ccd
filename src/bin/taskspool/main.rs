//! `taskspool`: look at a queue file from the command line.
//!
//! This build reads files no process owns, without writing to them (`Spool::inspect`): a
//! queue whose application is stopped, or one whose owner was killed. Reaching a live owner
//! (and the commands that change a queue) comes with the control socket.
//!
//! Exit codes: 0 done; 1 the command failed (the message says why); 2 bad usage (also a path
//! that holds no queue file); 3 no such task; 4 the file is owned by a running process; 5 the
//! file is not a usable queue file.

mod print;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use taskspool::{
    Error, ErrorKind, Inspection, MAX_PAGE, Paging, Spool, TaskFilter, TaskId, TaskState,
};

/// The command line.
#[derive(Parser)]
#[command(name = "taskspool", version, about = "Look at a taskspool queue file", after_help = EXIT_CODES)]
struct Cli {
    /// Print JSON instead of tables (one document per command).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 done; 1 the command failed; 2 bad usage (also a path with no queue file); 3 no such \
task; 4 the file is owned by a running process; 5 not a usable queue file.";

#[derive(Subcommand)]
enum Command {
    /// Task counts per queue and state.
    Stats {
        /// The queue file.
        file: PathBuf,
    },
    /// List tasks, oldest first (a page at a time: pass the printed `next` to --after).
    Ls {
        /// The queue file.
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
        /// The queue file.
        file: PathBuf,
        /// The task id.
        id: u64,
    },
    /// The periodic schedules, with their next and last fire.
    Schedules {
        /// The queue file.
        file: PathBuf,
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

fn open(file: &PathBuf) -> Result<Inspection, Error> {
    Spool::inspect(file)
}

fn run(cli: &Cli) -> Result<String, Error> {
    let json = cli.json;
    match &cli.command {
        Command::Stats { file } => {
            let stats = open(file)?.stats()?;
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
            let page = open(file)?.tasks(&filter, &paging)?;
            Ok(if json {
                print::json(&page)
            } else {
                print::page(&page)
            })
        }
        Command::Show { file, id } => {
            let status = open(file)?.status(TaskId::from_u64(*id))?;
            Ok(if json {
                print::json(&status)
            } else {
                print::task(&status)
            })
        }
        Command::Schedules { file } => {
            let schedules = open(file)?.schedules()?;
            Ok(if json {
                print::json(&schedules)
            } else {
                print::schedules(&schedules)
            })
        }
    }
}

/// The error in one line, with what to do.
fn one_line(e: &Error) -> String {
    let text = match e {
        Error::AlreadyOpen { path } => format!(
            "{} is owned by a running process; this build reads only files no process owns \
             (stop the application, or wait for the control socket)",
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
        _ => 1,
    }
}
