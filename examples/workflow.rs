//! Workflows from Celery's canvas guide: a chain that passes each result on, a chord whose
//! body sums its members' results, a group, a follow-up that exists only with its parent's
//! success, and a chord whose member fails (its body does not run).
//!
//! Run with `cargo run --example workflow`. The queue file is a temporary one.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskspool::{Context, Error, Spool, Task, TaskError};

/// `a + b`.
#[derive(Serialize, Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

impl Task for Add {
    const NAME: &'static str = "add";
    type Output = i64;
    fn run(self, _ctx: &Context) -> Result<i64, TaskError> {
        Ok(self.a + self.b)
    }
}

/// Celery's `add.s(b)` in a chain: the step before's result plus `b`.
#[derive(Serialize, Deserialize)]
struct AddTo {
    b: i64,
}

impl Task for AddTo {
    const NAME: &'static str = "add_to";
    type Output = i64;
    fn run(self, ctx: &Context) -> Result<i64, TaskError> {
        Ok(ctx.input::<i64>()? + self.b)
    }
}

/// Celery's `xsum`: a chord's body, summing its members' results.
#[derive(Serialize, Deserialize)]
struct XSum;

impl Task for XSum {
    const NAME: &'static str = "xsum";
    type Output = i64;
    fn run(self, ctx: &Context) -> Result<i64, TaskError> {
        Ok(ctx.inputs::<i64>()?.iter().sum())
    }
}

/// Divides 100 by `n`: fails for good on 0.
#[derive(Serialize, Deserialize)]
struct Divide {
    n: i64,
}

impl Task for Divide {
    const NAME: &'static str = "divide";
    type Output = i64;
    fn run(self, ctx: &Context) -> Result<i64, TaskError> {
        if self.n == 0 {
            return Err(TaskError::fail("division by zero"));
        }
        // A follow-up, stored only if this attempt succeeds.
        ctx.enqueue(Add { a: self.n, b: 0 })?;
        Ok(100 / self.n)
    }
}

fn main() -> Result<(), Error> {
    let spool = Spool::temporary()?;
    let worker = spool
        .worker()
        .concurrency(2)
        .register::<Add>()
        .register::<AddTo>()
        .register::<XSum>()
        .register::<Divide>()
        .start()?;
    let wait = Duration::from_secs(10);

    let chain = spool
        .chain(Add { a: 2, b: 2 })
        .then(AddTo { b: 4 })
        .then(AddTo { b: 8 })
        .enqueue()?;
    println!("chain(add(2, 2), add(4), add(8)) = {}", chain.wait(wait)?);

    let chord = spool.chord((0..10).map(|i| Add { a: i, b: i }), XSum)?;
    println!(
        "chord(add(i, i) for i in 0..10)(xsum) = {}",
        chord.body.wait(wait)?
    );

    let group = spool.group((1..=4).map(|n| Divide { n }))?;
    println!("group(divide(n) for n in 1..=4) = {:?}", group.wait(wait)?);

    let failing = spool.chord((0..3).map(|n| Divide { n }), XSum)?;
    match failing.body.wait(wait) {
        Err(Error::TaskFailed(f)) => println!("a chord whose member fails: {}", f.message),
        other => println!("unexpected: {other:?}"),
    }
    worker.shutdown(wait)?;
    Ok(())
}
