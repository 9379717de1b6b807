//! Prometheus remote write 1.0 receiver: `POST /api/v1/write`.
//!
//! The body is a snappy-compressed (block format) protobuf `WriteRequest`.
//! Senders authenticate with the agents' bearer tokens and the `commons`
//! label is stamped from the token, exactly as on the gRPC path. The whole
//! request is validated before anything is written: bad input gets 400
//! with a message naming the series and nothing of the request is applied.
//! 204 means every sample is durably committed; a storage failure gets 500,
//! which senders retry. Exemplars are ignored and native histograms are
//! counted as dropped (this version stores float samples only).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;

use crate::auth::AgentAuth;
use crate::config::Limits;
use crate::metrics::IngestMetrics;
use crate::tsdb::Tsdb;

/// Largest compressed body accepted.
const MAX_BODY: usize = 64 << 20;
/// Largest decompressed body accepted.
const MAX_DECODED: usize = 256 << 20;

/// Receiver metrics (`csoc_collector_remote_write_*`).
#[derive(Clone, Default)]
pub struct RemoteWriteMetrics {
    requests: Family<Vec<(String, String)>, Counter>,
    dropped: Family<Vec<(String, String)>, Counter>,
}

impl RemoteWriteMetrics {
    /// Registers under `reg` (the `csoc_collector` sub-registry).
    pub fn new(reg: &mut Registry) -> Self {
        let m = RemoteWriteMetrics::default();
        reg.register("remote_write_requests", "Remote write requests by status code", m.requests.clone());
        reg.register(
            "remote_write_dropped",
            "Remote write items not stored, by reason",
            m.dropped.clone(),
        );
        m
    }

    fn request(&self, code: StatusCode) {
        self.requests.get_or_create(&vec![("code".into(), code.as_u16().to_string())]).inc();
    }

    fn drop_items(&self, reason: &str, n: u64) {
        if n > 0 {
            self.dropped.get_or_create(&vec![("reason".into(), reason.into())]).inc_by(n);
        }
    }
}

/// What the receiver needs.
#[derive(Clone)]
pub struct RemoteWriteState {
    /// Storage.
    pub tsdb: Tsdb,
    /// Agent tokens.
    pub auth: Arc<AgentAuth>,
    /// Label limits.
    pub limits: Limits,
    /// Shared ingest metrics.
    pub ingest_metrics: IngestMetrics,
    /// Receiver metrics.
    pub metrics: RemoteWriteMetrics,
}

/// The receiver's route.
pub fn router(state: RemoteWriteState) -> Router {
    Router::new()
        .route("/api/v1/write", post(write))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn reply(m: &RemoteWriteMetrics, code: StatusCode, msg: String) -> Response {
    m.request(code);
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg + "\n").into_response()
}

async fn write(State(st): State<RemoteWriteState>, headers: HeaderMap, body: Bytes) -> Response {
    let m = &st.metrics;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer);
    let Some(commons) = token.and_then(|t| st.auth.authenticate(t)).map(str::to_string) else {
        st.ingest_metrics
            .refused(if token.is_none() { "no_token" } else { "unknown_token" });
        tracing::warn!("refused a remote write request: missing or unknown bearer token");
        return reply(
            m,
            StatusCode::UNAUTHORIZED,
            "a bearer token mapped to a commons (--agent-token COMMONS=TOKEN) is required".into(),
        );
    };
    if let Some(enc) = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok())
        && !enc.eq_ignore_ascii_case("snappy")
    {
        return reply(
            m,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Encoding {enc:?}: remote write 1.0 uses snappy"),
        );
    }
    let decoded_len = match snap::raw::decompress_len(&body) {
        Ok(n) => n,
        Err(e) => return reply(m, StatusCode::BAD_REQUEST, format!("snappy: {e}")),
    };
    if decoded_len > MAX_DECODED {
        return reply(
            m,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("decompressed body of {decoded_len} bytes exceeds {MAX_DECODED}"),
        );
    }
    let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
        Ok(r) => r,
        Err(e) => return reply(m, StatusCode::BAD_REQUEST, format!("snappy: {e}")),
    };
    let req = match csoc_proto::prometheus::WriteRequest::decode(raw.as_slice()) {
        Ok(r) => r,
        Err(e) => return reply(m, StatusCode::BAD_REQUEST, format!("protobuf WriteRequest: {e}")),
    };
    let mut app = st.tsdb.appender();
    let (mut histograms, mut exemplars) = (0u64, 0u64);
    for (i, ts) in req.timeseries.into_iter().enumerate() {
        histograms += ts.histograms.len() as u64;
        exemplars += ts.exemplars.len() as u64;
        let labels = match super::validate_series(ts.labels.into_iter().map(|l| (l.name, l.value)), &commons, &st.limits) {
            Ok(l) => Arc::new(l),
            Err((_, msg)) => {
                return reply(
                    m,
                    StatusCode::BAD_REQUEST,
                    format!("timeseries[{i}]: {msg}; nothing of this request was stored"),
                );
            }
        };
        for s in ts.samples {
            app.append(labels.clone(), s.timestamp, s.value);
        }
    }
    m.drop_items("native_histogram", histograms);
    m.drop_items("exemplar", exemplars);
    if histograms > 0 {
        tracing::warn!(commons = %commons, histograms, "remote write: native histogram samples are not stored by this version");
    }
    let n = app.len() as u64;
    if n == 0 {
        return reply(m, StatusCode::NO_CONTENT, String::new());
    }
    match app.commit().await {
        Ok(_) => {
            st.ingest_metrics.stored(&commons, n);
            m.request(StatusCode::NO_CONTENT);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => reply(m, StatusCode::INTERNAL_SERVER_ERROR, format!("storage: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use csoc_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
    use tower::ServiceExt;

    const TOKEN: &str = "remote-write-token-0123456789";

    fn setup() -> (tempfile::TempDir, Tsdb, Router) {
        let d = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::default();
        let tsdb = Tsdb::open(d.path(), &crate::tsdb::TsdbOptions::default(), &mut reg).expect("open");
        let mut auth = AgentAuth::default();
        auth.add_token("alpha", TOKEN);
        let metrics = crate::metrics::CollectorMetrics::new(&mut reg);
        let st = RemoteWriteState {
            tsdb: tsdb.clone(),
            auth: Arc::new(auth),
            limits: Limits::default(),
            ingest_metrics: metrics.ingest,
            metrics: RemoteWriteMetrics::new(&mut reg),
        };
        (d, tsdb, router(st))
    }

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples.iter().map(|(t, v)| Sample { value: *v, timestamp: *t }).collect(),
            ..Default::default()
        }
    }

    fn body(req: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).expect("snappy")
    }

    async fn post(app: &Router, token: Option<&str>, body: Vec<u8>) -> (StatusCode, String) {
        let mut r = Request::post("/api/v1/write").header("Content-Encoding", "snappy");
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        let resp = app
            .clone()
            .oneshot(r.body(Body::from(body)).expect("request"))
            .await
            .expect("response");
        let code = resp.status();
        let b = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        (code, String::from_utf8_lossy(&b).into_owned())
    }

    fn stored(tsdb: &Tsdb) -> Vec<crate::tsdb::Series> {
        tsdb.querier(i64::MIN, i64::MAX)
            .select(&[crate::tsdb::Matcher::regex("__name__", ".+", false).expect("re")])
            .expect("select")
    }

    #[tokio::test]
    async fn accepts_and_stamps_commons() {
        let (_d, tsdb, app) = setup();
        let req = WriteRequest {
            timeseries: vec![
                series(
                    &[("__name__", "up"), ("commons", "evil"), ("job", "node")],
                    &[(1000, 1.0), (2000, 0.0)],
                ),
                series(&[("job", "node"), ("__name__", "load1")], &[(1000, 0.5)]),
            ],
            ..Default::default()
        };
        let (code, msg) = post(&app, Some(TOKEN), body(&req)).await;
        assert_eq!(code, StatusCode::NO_CONTENT, "{msg}");
        let s = stored(&tsdb);
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|s| s.labels.iter().any(|(k, v)| k == "commons" && v == "alpha")));
        assert_eq!(s[1].samples, vec![(1000, 1.0), (2000, 0.0)]);
    }

    #[tokio::test]
    async fn bad_input_is_400_and_nothing_is_applied() {
        let (_d, tsdb, app) = setup();
        let good = series(&[("__name__", "up")], &[(1000, 1.0)]);
        let bad = series(&[("__name__", "up"), ("bad-label", "x")], &[(1000, 1.0)]);
        let req = WriteRequest {
            timeseries: vec![good, bad],
            ..Default::default()
        };
        let (code, msg) = post(&app, Some(TOKEN), body(&req)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(msg.contains("timeseries[1]") && msg.contains("bad-label"), "{msg}");
        assert!(stored(&tsdb).is_empty(), "the good series of a bad request is not applied either");
        let (code, msg) = post(&app, Some(TOKEN), b"not snappy at all".to_vec()).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{msg}");
        let junk = snap::raw::Encoder::new().compress_vec(&[0xff, 0xff, 0xff]).expect("snappy");
        let (code, msg) = post(&app, Some(TOKEN), junk).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(msg.contains("protobuf"), "{msg}");
    }

    #[tokio::test]
    async fn needs_a_known_token() {
        let (_d, tsdb, app) = setup();
        let req = WriteRequest {
            timeseries: vec![series(&[("__name__", "up")], &[(1000, 1.0)])],
            ..Default::default()
        };
        assert_eq!(post(&app, None, body(&req)).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            post(&app, Some("wrong-token-xxxxxxxxxxxx"), body(&req)).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert!(stored(&tsdb).is_empty());
    }
}
