//! The dashboard of a spool on PostgreSQL: the same endpoints and refusals, over real HTTP.

use taskspool::Spool;

use super::http::{changes_need_the_token, serves_every_view_as_json};
use super::pg_common::server;

fn fresh() -> Option<Spool> {
    let url = server("dashboard on PostgreSQL")?;
    Some(Spool::builder().connect_postgres_temporary(&url).unwrap())
}

#[test]
fn the_api_serves_every_view_as_json_on_postgres() {
    if let Some(spool) = fresh() {
        serves_every_view_as_json(&spool);
    }
}

#[test]
fn changes_need_the_token_a_post_and_the_same_site_on_postgres() {
    if let Some(spool) = fresh() {
        changes_need_the_token(&spool);
    }
}
