//! csoc-common: what the csoc-watch agent and collector share, and nothing
//! either binary owns alone.
//!
//! Dependencies run one way: `csoc-agent` and `csoc-collector` depend on
//! this crate; it depends on neither (CI checks this, see the README's
//! architecture map). Each module has one job:
//!
//! | module | job |
//! |---|---|
//! | [`labels`] | the label-set type, metric metadata, label and metric name rules |
//! | [`duration`] | Prometheus durations and byte sizes: parse, print, serde |
//! | [`calendar`] | civil dates on days since the epoch |
//! | [`gofmt`] | Go's `strconv.FormatFloat`, which Prometheus's outputs follow |
//! | [`exposition`] | the Prometheus text and OpenMetrics parser |
//! | [`relabel`] | Prometheus `relabel_configs` |
//! | [`config`] | the config error type and YAML reading |
//! | [`tls`] | PEM certificates, keys and CA bundles |
//! | [`url`] | URLs safe for logs and labels |
//! | [`http`] | the `/metrics` answer |
//! | [`process`] | the `process_*` metrics (CPU, memory, file descriptors, start time) from `/proc/self` |
//! | [`build`] | build information (`*_build_info`, `/api/v1/status/buildinfo`) |
//! | [`log`], [`shutdown`], [`task`], [`time`], [`retry`], [`error`] | logging, signals, task joins, the clock, backoff, error chains |

pub mod build;
pub mod calendar;
pub mod central;
pub mod config;
pub mod duration;
pub mod error;
pub mod exposition;
pub mod gofmt;
pub mod http;
pub mod httpconf;
pub mod labels;
pub mod log;
pub mod process;
pub mod relabel;
pub mod retry;
pub mod shutdown;
pub mod task;
pub mod time;
pub mod tls;
pub mod url;
