//! What drives the writer: its thread, which sleeps until a command or the next due time and
//! gathers concurrent callers into one group, and callers that find it idle and run their
//! own group.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::store::writer::command::Command;
use crate::store::writer::state::{Core, GATHER, MAX_GROUP, Writer, lock};

impl Writer {
    /// Runs the group of `cmd` on the calling thread, which found the writer idle and nothing
    /// queued, when the last groups served one caller at a time: a caller that waits for its
    /// own group anyway saves two thread wake-ups (the writer's, then its own), which on a
    /// small machine cost as much as the group. With concurrent callers the writer thread
    /// runs the groups (and gathers them, see [`Writer::gather`]): the command is handed back,
    /// for the channel.
    pub(crate) fn lead(
        &mut self,
        cmd: Command,
        rx: &Receiver<Command>,
        tx: &Sender<Command>,
    ) -> Option<Command> {
        if self.closed {
            self.refuse([cmd]);
            return None;
        }
        // Only requests whose order does not matter (`Command::may_lead`): the writer thread
        // may hold a command it has taken from the channel but not yet applied (it takes the
        // lock after the command), so a caller's group can run before a command another
        // thread sent earlier. Nothing depends on that order for an enqueue or a revoke (the
        // two orders are both one the callers could have seen); a `Sync` ("everything sent
        // before is committed") or a drain's next claim does.
        if !cmd.may_lead() || self.last_callers > 1 || !rx.is_empty() {
            return Some(cmd);
        }
        let before = self.wake_times();
        self.last_callers = 1;
        let led = catch_unwind(AssertUnwindSafe(|| self.group(vec![cmd], None)));
        let next = match led {
            Ok(next) => next,
            Err(panic) => {
                // The caller's reply went with the panic: it hears the stop (`request`).
                self.stop("running a caller's group", panic.as_ref());
                let _ = tx.send(Command::Tick);
                return None;
            }
        };
        // The writer thread sleeps until the due time it last saw, or until a command: it is
        // told when that changed, when work is left over, and when it must close.
        if next.shutdown {
            let _ = tx.send(Command::Shutdown);
        } else if next.more || self.wake_times() != before {
            let _ = tx.send(Command::Tick);
        }
        None
    }

    /// Group commit's gathering window. When several producers waited on the last commit, each
    /// is about to send its next enqueue, but the writer would otherwise start the next group
    /// with whoever was quickest and leave the rest for the group after. Waiting up to
    /// [`GATHER`] for as many producers as last time (asleep, leaving the CPU to them) lets
    /// them share one fsync. A lone producer never waits.
    ///
    /// `callers` enqueues are in the group already; each command that arrives is applied at
    /// once (`apply`), so the group's work is done while the rest are on their way rather
    /// than after them.
    pub(super) fn gather(
        &mut self,
        rx: &Receiver<Command>,
        mut callers: usize,
        mut apply: impl FnMut(&mut Self, Command),
    ) {
        if self.last_callers < 2 || callers == 0 {
            return;
        }
        let deadline = Instant::now() + GATHER;
        while callers < self.last_callers {
            match rx.recv_deadline(deadline) {
                Ok(cmd) => {
                    callers += usize::from(cmd.is_enqueue());
                    apply(self, cmd);
                }
                Err(_) => break,
            }
        }
    }

    /// What the writer thread's sleep depends on: the next due time, the buffered sync's
    /// deadline, and the retry after a failed group.
    fn wake_times(&self) -> (Option<u64>, Option<Instant>, Option<Instant>) {
        (self.next_wake, self.sync_deadline, self.retry_at)
    }

    /// How long to sleep before the next due time; `None` = until a command arrives. After
    /// a failed group, at least until its backoff has passed (a command ends the sleep
    /// sooner): the next group applies the failed group's completions again.
    fn wait_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        if let Some(at) = self.retry_at
            && at > now
        {
            return Some(at - now);
        }
        let sync = self.sync_deadline.map(|d| d.saturating_duration_since(now));
        let retry = (!self.retry.is_empty()).then_some(Duration::ZERO);
        let timer = match self.next_wake {
            Some(wake) if wake <= self.config.clock.now_ms() => Some(Duration::ZERO),
            Some(wake) => self.config.clock.sleep_until(wake),
            None => None,
        };
        [sync, retry, timer].into_iter().flatten().min()
    }
}

/// The writer thread: sleeps until a command arrives or the next due time, then runs a group
/// (unless a caller runs one, see [`Writer::lead`]). It sleeps outside the lock, so callers
/// and readers are never kept waiting by its sleep — nor by the backoff after a failed group.
///
/// When it ends — closed, or stopped by a panic (redb panics on some damaged files) — it sets
/// `exited`, then answers every command still queued; a caller that sends one later answers
/// it itself (see `WriterHandle::request`), so no caller waits for a writer that is gone.
pub(super) fn run(core: &Core, rx: &Receiver<Command>, exited: &Exited) {
    let served = catch_unwind(AssertUnwindSafe(|| serve(core, rx)));
    let mut writer = lock(core);
    if let Err(panic) = served {
        writer.stop("running a group on the writer thread", panic.as_ref());
    }
    writer.closed = true;
    exited.flag.store(true, Ordering::SeqCst);
    writer.refuse(rx.try_iter());
    drop(writer);
    *exited.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
    exited.ended.notify_all();
}

/// Whether the writer thread has ended, and a way to wait until it has answered what it
/// held: a caller whose reply was dropped unanswered (the thread panicked with it) waits for
/// that, then reads why it stopped.
#[derive(Default)]
pub(crate) struct Exited {
    /// Set once the thread has stopped taking commands.
    flag: AtomicBool,
    /// Set once it has answered what was queued.
    done: Mutex<bool>,
    ended: Condvar,
}

impl Exited {
    /// Whether the thread has stopped taking commands.
    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Blocks until the thread has ended.
    pub(crate) fn wait(&self) {
        let done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        let _done = self
            .ended
            .wait_while(done, |done| !*done)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

fn serve(core: &Core, rx: &Receiver<Command>) {
    // The first group runs at once: it promotes whatever became due while the file was closed.
    let mut more = true;
    loop {
        let first = if more {
            rx.try_recv().ok()
        } else {
            let timeout = lock(core).wait_timeout();
            match timeout {
                Some(timeout) => match rx.recv_timeout(timeout) {
                    Ok(cmd) => Some(cmd),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return lock(core).close(),
                },
                None => match rx.recv() {
                    Ok(cmd) => Some(cmd),
                    Err(_) => return lock(core).close(),
                },
            }
        };
        let mut writer = lock(core);
        if writer.closed {
            writer.refuse(first);
            return;
        }
        let mut cmds: Vec<Command> = first.into_iter().collect();
        while cmds.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => cmds.push(cmd),
                Err(_) => break,
            }
        }
        let next = writer.group(cmds, Some(rx));
        more = next.more;
        if next.shutdown {
            return writer.close();
        }
    }
}
