//! Integration tests of the core lifecycle, against real redb files.
//!
//! Every module states the promise it checks. Shared task types and helpers live in `common`.

pub(crate) mod common;

mod by_name;
mod chord_parts;
mod concurrency;
mod control;
mod crash;
mod damage;
mod decode;
mod delays;
mod events;
mod files;
mod flow;
mod follow_ups;
mod format;
mod format_control;
mod format_flow;
mod format_parts;
mod format_workflow;
mod handlers;
mod inspect;
mod lifecycle;
mod limits;
mod listing;
mod metrics;
mod names;
mod options;
mod panics;
mod priorities;
mod queues;
mod retries;
mod schedule_crash;
mod schedules;
mod shutdown;
mod ttl;
mod unique;
mod unregistered;
mod views;
mod workflow_links;
mod workflow_ttl;
mod workflows;
