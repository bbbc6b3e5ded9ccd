//! Enqueueing by task name, with JSON arguments: for tools and scripts that do not link the
//! task's Rust type (Celery's `send_task`, `celery call`).

use std::sync::Arc;

use crate::error::Error;
use crate::model::TaskId;
use crate::options::Options;
use crate::shared::Spool;
use crate::store::{Lead, NewTask, Then};

/// Longest task name accepted by name, in bytes.
const MAX_NAME_BYTES: usize = 255;

impl Spool {
    /// Enqueues a task of the type registered as `name`, with `arguments` as its JSON
    /// arguments, durably, like [`enqueue_with`](Self::enqueue_with). The type's
    /// [`Task::defaults`](crate::Task::defaults) are not known here, so only `options`
    /// apply. Arguments that do not fit the type are found when a worker decodes them: the
    /// task then ends `Failed` with a decode error naming the field, as for any task.
    ///
    /// ```
    /// # use taskspool::{Options, Spool};
    /// # let spool = Spool::temporary()?;
    /// let id = spool.enqueue_json("mail.send", serde_json::json!({ "to": "a@b.c" }), Options::new())?;
    /// # let _ = id;
    /// # Ok::<(), taskspool::Error>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidOption` for an empty name, one over 255 bytes or with control characters, or
    /// invalid options; as [`enqueue`](Self::enqueue) otherwise.
    pub fn enqueue_json(
        &self,
        name: &str,
        arguments: serde_json::Value,
        options: Options,
    ) -> Result<TaskId, Error> {
        let mut ids = self.enqueue_many_json(name, vec![arguments], options)?;
        ids.pop().ok_or(Error::Closed)
    }

    /// As [`enqueue_json`](Self::enqueue_json) for many tasks of one name, with the same
    /// options, in one transaction: all are stored, or none. Returns their ids in order.
    ///
    /// # Errors
    /// As [`enqueue_json`](Self::enqueue_json).
    pub fn enqueue_many_json(
        &self,
        name: &str,
        arguments: Vec<serde_json::Value>,
        options: Options,
    ) -> Result<Vec<TaskId>, Error> {
        if arguments.is_empty() {
            check_name(name)?;
            return Ok(Vec::new());
        }
        let ids = self
            .shared
            .engine
            .insert(self.json_tasks(name, &arguments, options)?)?;
        Ok(ids.into_iter().map(|e| e.id).collect())
    }

    /// As [`enqueue_many_json`](Self::enqueue_many_json) without waiting for the commit:
    /// `then` hears the ids once the tasks are durable, or the error (at once for an invalid
    /// name, option or argument), on whichever thread answers — it must not block. What the
    /// control socket runs for a client's enqueue, so that no thread of the owner waits for
    /// the sync on the client's behalf.
    pub(crate) fn enqueue_many_json_then(
        &self,
        name: &str,
        arguments: &[serde_json::Value],
        options: Options,
        then: Then<Vec<TaskId>>,
    ) {
        let tasks = match self.json_tasks(name, arguments, options) {
            Ok(tasks) if tasks.is_empty() => return then(Ok(Vec::new())),
            Ok(tasks) => tasks,
            Err(e) => return then(Err(e)),
        };
        self.shared.engine.insert_then(
            tasks,
            Lead::Allowed,
            Box::new(move |ids| then(ids.map(|ids| ids.into_iter().map(|e| e.id).collect()))),
        );
    }

    /// Tasks named `name` with these JSON arguments and options, validated at now.
    fn json_tasks(
        &self,
        name: &str,
        arguments: &[serde_json::Value],
        options: Options,
    ) -> Result<Vec<NewTask>, Error> {
        check_name(name)?;
        let now = self.shared.clock.now_ms();
        let opts = Arc::new(options.resolve(now)?);
        let task_name: Arc<str> = Arc::from(name);
        arguments
            .iter()
            .map(|arguments| {
                Ok(NewTask {
                    name: task_name.clone(),
                    payload: serde_json::to_vec(arguments).map_err(|e| {
                        Error::Json(format!("cannot encode the arguments of `{name}`: {e}"))
                    })?,
                    opts: opts.clone(),
                    enqueued_at_ms: now,
                    origin: None,
                    step: None,
                })
            })
            .collect()
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    let problem = if name.is_empty() {
        "a task name must not be empty".to_string()
    } else if name.len() > MAX_NAME_BYTES {
        format!(
            "task name is {} bytes long; the limit is {MAX_NAME_BYTES}",
            name.len()
        )
    } else if name.chars().any(char::is_control) {
        format!("task name {name:?} contains a control character")
    } else {
        return Ok(());
    };
    Err(Error::InvalidOption(problem))
}
