//! End-to-end tests: the real csoc-collector and csoc-agent binaries, as
//! separate processes on free 127.0.0.1 ports. One test binary, one module
//! per area.

mod agents;
mod alerting;
mod backends;
mod central_config;
mod console;
mod e2e;
mod gen3;
mod grafana;
mod helm;
mod hostile_api;
mod hostile_ingest;
mod hostile_query;
mod image;
mod interop;
mod kubectl;
mod kubernetes_logs;
mod kubernetes_state;
mod promcompat;
mod promql_conformance;
mod promqltest;
mod reliability;
mod remote_write;
mod replay;
mod scrape_interop;
mod selfmon;
mod storage;
mod systemd;
mod tls;
mod tls_reload;
mod usage;
