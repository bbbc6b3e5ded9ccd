//! The per-task record stored in the `tasks` table, and how it is encoded.
//!
//! The record has two parts (see `codec`): what the first release wrote, then [`Control`]
//! (format 4), written only when it holds something — a task that uses none of it is stored
//! byte for byte as before. States and attempt
//! error kinds are stored by their explicit codes (`TaskState::code`), never by their
//! position in a Rust enum; the other enums of the record (`Slot`, and the `RetryPolicy` it
//! embeds) keep their variants and fields in the order written here, which is part of the
//! file format.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::{AttemptError, MAX_PRIORITY, Origin, TaskState};
use crate::retry::RetryPolicy;
use crate::store::codec;
use crate::store::schema::ReadyKey;

/// Which index currently holds the task (so a transition can remove the old entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Slot {
    /// In no index: running or final.
    None,
    /// `ready[(queue, name, 9 - priority, seq)]`.
    Ready { seq: u64 },
    /// `scheduled[(at_ms, seq)]`.
    Scheduled { at_ms: u64, seq: u64 },
    /// `parked[(name id, limit key, 9 - priority, seq)]`: ready, but its key is at its
    /// per-key concurrency limit (format 5).
    Parked { seq: u64 },
}

/// Everything about a task, with its arguments and its result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    pub name: String,
    /// The interned id of `name` (the ready index is keyed by it).
    pub name_id: u32,
    pub queue: u32,
    pub priority: u8,
    #[serde(with = "state_code")]
    pub state: TaskState,
    /// Attempts started so far (including attempts lost to a crash).
    pub attempts: u32,
    pub max_retries: u32,
    pub retry: RetryPolicy,
    pub enqueued_at_ms: u64,
    /// When it is (or was) due to run.
    pub due_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub expires_at_ms: Option<u64>,
    pub slot: Slot,
    #[serde(with = "stored_errors")]
    pub errors: Vec<AttemptError>,
    /// The periodic schedule and fire time that enqueued it.
    pub origin: Option<Origin>,
    /// The JSON output of a succeeded task. Stored inline: the record is written once more
    /// at completion anyway, and a separate results table would cost an insert per task.
    #[serde(with = "serde_bytes")]
    pub output: Option<Vec<u8>>,
    /// The JSON arguments. Dropped when the task succeeds; kept while it may run again and
    /// after a failure, for inspection. Empty in the writer's copy of a running task (the
    /// stored record still has them).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// The second part (format 4).
    #[serde(skip)]
    pub control: Control,
    /// The third part (format 5).
    #[serde(skip)]
    pub flow: FlowPart,
    /// The fourth part (format 6).
    #[serde(skip)]
    pub deps: Deps,
}

/// The record's fourth part: its place in a workflow (format 6). Written only when it holds
/// something (and then after the earlier parts, default or not).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Deps {
    /// The workflow it belongs to: the id of the workflow's first task.
    pub workflow: Option<u64>,
    /// Parents whose success it still waits for (`Waiting` while above 0).
    pub parents_left: u32,
    /// The tasks waiting for this one.
    pub children: Vec<u64>,
    /// The parents whose outputs it receives, in order (`Context::input`), as runs of
    /// consecutive ids (first id, how many): a chord's body names its members in one run, so
    /// its record stays small however many there are (it is rewritten at each member's
    /// success).
    pub inputs: Vec<(u64, u32)>,
    /// Callbacks enqueued when it ends (`Spool::enqueue_linked`).
    pub links: Vec<StoredLink>,
    /// It runs once its parents have ended, however they ended (`Context::results`).
    pub settled: bool,
}

/// A callback as stored with its task: the task to enqueue, already validated, with its
/// interned queue and name and its options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredLink {
    /// Enqueued if the task ends other than succeeded (else if it succeeds).
    pub on_failure: bool,
    pub name: String,
    pub name_id: u32,
    pub queue: String,
    pub queue_id: u32,
    pub payload: Vec<u8>,
    pub priority: u8,
    pub max_retries: u32,
    pub retry: RetryPolicy,
    pub limits: crate::options::Limits,
}

/// The record's third part: flow control (format 5). Like [`Control`], written only when it
/// holds something (and then after a `Control` part, default or not).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FlowPart {
    /// The task's unique key, while it may hold it (see `Options::unique`).
    pub unique: Option<UniqueKey>,
    /// The key its type's per-key concurrency limit counts it under.
    pub limit_key: Option<String>,
}

/// A unique task's key and how long it holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UniqueKey {
    pub key: String,
    pub until: StoredUnique,
}

/// [`Unique`](crate::Unique) as stored: its variants and their order are part of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredUnique {
    UntilFinal,
    UntilStarted,
    /// Until this time (ms since the epoch).
    Until(u64),
}

/// The record's second part: what execution control added (format 4). Its default is "none
/// of it", and a record whose control is the default is stored without the part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Control {
    /// A revoke was asked while an attempt ran: when the attempt ends (or, after a crash, at
    /// the next open), the task ends `Revoked`.
    pub revoke_requested: bool,
    /// The hard time limit of each attempt, in ms (the spool's default applies when `None`).
    pub time_limit_ms: Option<u64>,
    /// The soft time limit of each attempt, in ms.
    pub soft_time_limit_ms: Option<u64>,
    /// The retries the task was enqueued with, once `max_retries` has moved away from them
    /// (a snooze adds one; a manual retry gives a fresh budget of these).
    pub base_retries: Option<u32>,
    /// The latest progress the handler reported, as JSON.
    #[serde(with = "serde_bytes")]
    pub progress: Option<Vec<u8>>,
}

impl TaskRecord {
    /// The record as stored.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut encoder = codec::Encoder::new().part(self)?;
        let has_deps = self.deps != Deps::default();
        let has_flow = has_deps || self.flow != FlowPart::default();
        if has_flow || self.control != Control::default() {
            encoder = encoder.part(&self.control)?;
        }
        if has_flow {
            encoder = encoder.part(&self.flow)?;
        }
        if has_deps {
            encoder = encoder.part(&self.deps)?;
        }
        Ok(encoder.finish())
    }

    /// A stored record.
    pub fn decode(bytes: &[u8]) -> Result<TaskRecord, Error> {
        let mut decoder = codec::Decoder::new(bytes)?;
        let mut rec: TaskRecord = decoder.part()?;
        rec.control = decoder.later_part()?;
        rec.flow = decoder.later_part()?;
        rec.deps = decoder.later_part()?;
        decoder.finish()?;
        Ok(rec)
    }

    /// The retries the task was enqueued with.
    pub fn base_retries(&self) -> u32 {
        self.control.base_retries.unwrap_or(self.max_retries)
    }

    /// The ready-index key for this task at sequence `seq`.
    pub fn ready_key(&self, seq: u64) -> ReadyKey {
        (self.queue, self.name_id, MAX_PRIORITY - self.priority, seq)
    }

    /// The record of a running task: the stored record (written before it started) with the
    /// `running` table's entry applied.
    pub fn overlay_running(&mut self, attempt: u32, started_at_ms: u64) {
        self.state = TaskState::Running;
        self.attempts = attempt;
        self.started_at_ms = Some(started_at_ms);
        self.slot = Slot::None;
    }

    /// Whether another attempt is allowed after `attempts` attempts.
    pub fn retries_left(&self) -> bool {
        self.attempts <= self.max_retries
    }
}

/// A state as its stored code (one byte).
mod state_code {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::model::TaskState;

    pub(super) fn serialize<S: Serializer>(state: &TaskState, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(state.code())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TaskState, D::Error> {
        let code = u8::deserialize(d)?;
        TaskState::from_code(code)
            .ok_or_else(|| D::Error::custom(format!("unknown task state code {code}")))
    }
}

/// The error history, each entry as (attempt, at ms, kind code, message).
mod stored_errors {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::clock::{from_system_time, to_system_time};
    use crate::model::{AttemptError, AttemptErrorKind};

    pub(super) fn serialize<S: Serializer>(
        errors: &[AttemptError],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(errors.iter().map(|e| {
            (
                e.attempt,
                from_system_time(e.at),
                e.kind.code(),
                e.message.as_str(),
            )
        }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<AttemptError>, D::Error> {
        Vec::<(u32, u64, u8, String)>::deserialize(d)?
            .into_iter()
            .map(|(attempt, at_ms, code, message)| {
                let kind = AttemptErrorKind::from_code(code).ok_or_else(|| {
                    D::Error::custom(format!("unknown attempt error kind code {code}"))
                })?;
                Ok(AttemptError {
                    attempt,
                    at: to_system_time(at_ms),
                    kind,
                    message,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AttemptErrorKind;

    /// The stored bytes of a record, pinned: a change to them is a change of the file format
    /// (and of `FORMAT_VERSION`), never an accident.
    #[test]
    fn a_record_is_stored_exactly_as_the_format_says() {
        let rec = TaskRecord {
            name: "t".into(),
            name_id: 2,
            queue: 1,
            priority: 3,
            state: TaskState::Retrying,
            attempts: 1,
            max_retries: 3,
            retry: RetryPolicy::immediate(),
            enqueued_at_ms: 5,
            due_at_ms: 6,
            started_at_ms: Some(7),
            finished_at_ms: None,
            expires_at_ms: None,
            slot: Slot::Scheduled { at_ms: 6, seq: 4 },
            errors: vec![AttemptError {
                attempt: 1,
                at: crate::clock::to_system_time(7),
                kind: AttemptErrorKind::WorkerLost,
                message: "m".into(),
            }],
            origin: None,
            output: None,
            payload: b"{}".to_vec(),
            control: Control::default(),
            flow: FlowPart::default(),
            deps: Deps::default(),
        };
        let bytes = rec.encode().unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            1,                  // envelope
            1, b't',            // name
            2, 1, 3,            // name id, queue, priority
            3,                  // state: Retrying's code
            1, 3,               // attempts, max retries
            0, 0, 0, 0,         // retry policy: base 0, cap 0, not exponential, no jitter
            5, 6,               // enqueued, due
            1, 7, 0, 0,         // started Some(7), finished None, expires None
            2, 6, 4,            // slot: Scheduled { at 6, seq 4 }
            1, 1, 7, 4, 1, b'm', // one error: attempt 1 at 7, WorkerLost's code, "m"
            0,                  // origin None
            0,                  // output None
            2, b'{', b'}',      // payload
        ];
        assert_eq!(bytes, expected);
        let back = TaskRecord::decode(&bytes).unwrap();
        assert_eq!((back.state, back.errors), (rec.state, rec.errors.clone()));
        // A code this build does not know is refused, never read as another state.
        let mut unknown = bytes.clone();
        unknown[6] = 99;
        let err = TaskRecord::decode(&unknown).unwrap_err();
        assert!(err.to_string().contains("undecodable record"), "{err}");

        // With control, the second part follows the first, pinned too.
        let mut with = rec.clone();
        with.control = Control {
            revoke_requested: true,
            time_limit_ms: Some(9),
            soft_time_limit_ms: None,
            base_retries: Some(2),
            progress: Some(b"1".to_vec()),
        };
        let bytes = with.encode().unwrap();
        #[rustfmt::skip]
        let control: &[u8] = &[
            1,                  // revoke requested
            1, 9, 0,            // time limit Some(9), soft None
            1, 2,               // base retries Some(2)
            1, 1, b'1',         // progress Some("1")
        ];
        assert_eq!(&bytes[..expected.len()], expected);
        assert_eq!(&bytes[expected.len()..], control);
        assert_eq!(TaskRecord::decode(&bytes).unwrap().control, with.control);

        // With flow control, a default control part comes first, then the flow part.
        let mut flowing = rec.clone();
        flowing.flow = FlowPart {
            unique: Some(UniqueKey {
                key: "k".into(),
                until: StoredUnique::Until(5),
            }),
            limit_key: Some("c".into()),
        };
        let bytes = flowing.encode().unwrap();
        #[rustfmt::skip]
        let parts: &[u8] = &[
            0, 0, 0, 0, 0,      // control: all default
            1, 1, b'k', 2, 5,   // unique Some("k", Until(5))
            1, 1, b'c',         // limit key Some("c")
        ];
        assert_eq!(&bytes[..expected.len()], expected);
        assert_eq!(&bytes[expected.len()..], parts);
        assert_eq!(TaskRecord::decode(&bytes).unwrap().flow, flowing.flow);

        // In a workflow: default control and flow parts, then the dependencies.
        let mut waiting = rec.clone();
        waiting.deps = Deps {
            workflow: Some(4),
            parents_left: 2,
            children: vec![9],
            inputs: vec![(5, 2)],
            links: Vec::new(),
            settled: false,
        };
        let bytes = waiting.encode().unwrap();
        #[rustfmt::skip]
        let parts: &[u8] = &[
            0, 0, 0, 0, 0,      // control: all default
            0, 0,               // flow: no unique key, no limit key
            1, 4,               // workflow Some(4)
            2,                  // parents left
            1, 9,               // children [9]
            1, 5, 2,            // inputs [5..5+2]
            0,                  // links: none
            0,                  // settled: false
        ];
        assert_eq!(&bytes[..expected.len()], expected);
        assert_eq!(&bytes[expected.len()..], parts);
        assert_eq!(TaskRecord::decode(&bytes).unwrap().deps, waiting.deps);
    }
}
