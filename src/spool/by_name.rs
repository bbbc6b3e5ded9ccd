//! Enqueueing by task name, with JSON arguments: for tools and scripts that do not link the
//! task's Rust type (Celery's `send_task`, `celery call`).

use std::sync::Arc;

use crate::error::Error;
use crate::model::TaskId;
use crate::options::Options;
use crate::shared::Spool;
use crate::store::NewTask;

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
        check_name(name)?;
        let now = self.shared.clock.now_ms();
        let task = NewTask {
            name: Arc::from(name),
            payload: serde_json::to_vec(&arguments).map_err(|e| {
                Error::Json(format!("cannot encode the arguments of `{name}`: {e}"))
            })?,
            opts: Arc::new(options.resolve(now)?),
            enqueued_at_ms: now,
            origin: None,
            step: None,
        };
        let mut ids = self.shared.engine.insert(vec![task])?;
        ids.pop().map(|e| e.id).ok_or(Error::Closed)
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
