//! The writer: one group at a time owns the redb write transaction.
//!
//! A group applies every pending command to the write transaction (enqueues, completions,
//! registrations), stages due work and prunes, claims ready tasks for free worker slots,
//! makes the group durable with one `fdatasync` of the write-ahead log, and only then
//! answers its callers and hands jobs to workers (`group`). The transaction is kept open for
//! the next group: it is committed to redb only when a reader needs it, or every so many
//! groups (`commit`). Groups are run by the writer thread, or by a caller that finds it idle
//! (`thread`).
//!
//! The files: `command` (the requests), `state` (the writer's state), `group` (the phases of
//! one group and how its callers are answered), `commit` (durability and publication),
//! `thread` (what drives groups), `handle` (what the engine holds).

mod command;
mod commit;
mod group;
mod handle;
mod state;
mod thread;

pub(crate) use command::Command;
#[cfg(test)]
pub(crate) use commit::PUBLISH_GROUPS;
pub(crate) use handle::WriterHandle;
#[cfg(test)]
pub(crate) use handle::spawn_opened;
pub(crate) use state::WriterConfig;
#[cfg(test)]
pub(crate) use state::lock;
