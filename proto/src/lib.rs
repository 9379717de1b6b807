//! Wire types of the csoc-watch agent ↔ collector protocol.
//!
//! The protocol is defined in `proto/csoc/v1/ingest.proto`; this crate holds
//! only the generated types and the gRPC client/server stubs. Conversions to
//! and from the agent's and collector's own types live in `agent/src/shipper/`
//! and `collector/src/ingest/`.

/// Version 1 of the protocol.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("csoc.v1");
}

/// Prometheus remote write 1.0 wire types (`WriteRequest` and friends).
#[allow(clippy::all, missing_docs)]
pub mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// gRPC metadata key carrying the agent's bearer token
/// (`authorization: Bearer <token>`).
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// The special NaN that marks a series as stale (Prometheus's `StaleNaN`).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Returns true when `v` is the staleness marker (bit-exact comparison).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}
