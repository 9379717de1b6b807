//! csoc-common: what the csoc-watch agent and collector share, and nothing
//! either binary owns alone. Dependencies run one way: `csoc-agent` and
//! `csoc-collector` depend on this crate; it depends on neither.

pub mod calendar;
pub mod gofmt;
