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
//!
//! Hostile input is bounded before it costs memory or CPU: the compressed
//! body is capped (at most what a snappy block of
//! `max_remote_write_decompressed_bytes` can compress to, and 64MiB), and
//! the decompressed length announced in the snappy header is checked
//! against `max_remote_write_decompressed_bytes` before anything is
//! decompressed (413 naming the limit). The per-agent limits of the gRPC
//! path apply too, through the same [`Limiter`], keyed by the sender's
//! commons (the token's) and the agent name `remote_write`: over
//! `max_samples_per_second` → 429 with `Retry-After` (retryable, as the
//! remote write spec says); over `max_series_per_agent` → 400 naming the
//! limit (not retryable). A refused request stores nothing and is counted in
//! `csoc_collector_limit_rejections_total`.

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

use super::limits::{Limiter, series_hash};
use crate::auth::AgentAuth;
use crate::config::Limits;
use crate::metadata::MetadataStore;
use crate::metrics::IngestMetrics;
use crate::tsdb::Tsdb;

/// Largest compressed body accepted.
const MAX_BODY: usize = 64 << 20;
/// Largest decompressed body accepted by [`decompress`] (the fuzz
/// targets'); the receiver uses `max_remote_write_decompressed_bytes`.
const MAX_DECODED: usize = 256 << 20;
/// The agent name remote-write senders are limited under (with the commons
/// their token maps to).
pub const REMOTE_WRITE_AGENT: &str = "remote_write";

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
    pub auth: crate::live::Live<AgentAuth>,
    /// Label limits.
    pub limits: crate::live::Live<Limits>,
    /// Shared ingest metrics.
    pub ingest_metrics: IngestMetrics,
    /// Receiver metrics.
    pub metrics: RemoteWriteMetrics,
    /// Where the requests' metric metadata is recorded.
    pub metadata: Arc<MetadataStore>,
    /// Where label-limit rejections are counted.
    pub limit_metrics: super::limits::LimitMetrics,
    /// The per-agent limits shared with the gRPC ingest.
    pub limiter: Arc<Limiter>,
}

impl RemoteWriteState {
    /// The largest decompressed body (`max_remote_write_decompressed_bytes`,
    /// 0 = no limit of its own: [`MAX_DECODED`]).
    fn max_decoded(&self) -> usize {
        match self.limits.load().max_remote_write_decompressed_bytes {
            0 => MAX_DECODED,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }
}

/// The receiver's route.
pub fn router(state: RemoteWriteState) -> Router {
    // No valid body is longer than snappy's worst case for the largest
    // decompressed size.
    let body_cap = snap::raw::max_compress_len(state.max_decoded()).clamp(1, MAX_BODY);
    Router::new()
        .route("/api/v1/write", post(write))
        .layer(DefaultBodyLimit::max(body_cap))
        .with_state(state)
}

/// Decodes and validates a whole request into an appender (nothing is
/// written yet). Known series are found by their borrowed labels, without
/// allocating; new series are validated in full. Returns the appender and
/// the numbers of native histogram samples and exemplars seen.
/// The hashes of the samples' series (what the per-agent limits count) are
/// pushed to `used`.
fn build(st: &RemoteWriteState, commons: &str, raw: &[u8], used: &mut Vec<u64>) -> Result<(crate::tsdb::Appender, u64, u64), String> {
    let mut app = st.tsdb.appender();
    let mut lookup = st.tsdb.series_lookup();
    let (mut histograms, mut exemplars) = (0u64, 0u64);
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(16);
    wire::for_each_series(raw, |i, ts| {
        histograms += ts.histograms;
        exemplars += ts.exemplars;
        pairs.clear();
        pairs.extend(ts.labels.iter().copied().filter(|(k, v)| *k != "commons" && !v.is_empty()));
        pairs.push(("commons", commons));
        if !pairs.is_sorted_by(|a, b| a.0 <= b.0) {
            pairs.sort_by(|a, b| a.0.cmp(b.0));
        }
        if let Some(r) = lookup.get_ref(&pairs) {
            let h = series_hash(&pairs);
            for &(t, v) in &ts.samples {
                app.append_ref(r, t, v);
                used.push(h);
            }
            return Ok(());
        }
        // A new series: `append` looks it up again under the lock itself.
        lookup.release();
        let owned = ts.labels.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let labels = super::validate_series(owned, commons, &st.limits.load())
            .map(Arc::new)
            .map_err(|(lim, msg)| {
                if let Some(l) = lim {
                    st.limit_metrics.rejected(l, commons);
                }
                format!("timeseries[{i}]: {msg}; nothing of this request was stored")
            })?;
        let h = series_hash(&labels);
        for &(t, v) in &ts.samples {
            app.append(labels.clone(), t, v);
            used.push(h);
        }
        Ok(())
    })?;
    Ok((app, histograms, exemplars))
}

/// A borrowing decoder of remote write's `WriteRequest` protobuf: label
/// names and values are slices of the decompressed body (checked UTF-8), so
/// decoding allocates nothing per label. Field numbers and wire types are
/// those of prometheus/prompb (see `proto/proto/prometheus/remote.proto`);
/// unknown fields are skipped as protobuf requires.
pub(crate) mod wire {
    /// One decoded `TimeSeries`, reused between series.
    #[derive(Default)]
    pub struct Series<'a> {
        /// (name, value) in the order sent.
        pub labels: Vec<(&'a str, &'a str)>,
        /// (timestamp ms, value).
        pub samples: Vec<(i64, f64)>,
        /// Native histogram samples seen (not decoded).
        pub histograms: u64,
        /// Exemplars seen (not decoded).
        pub exemplars: u64,
    }

    /// Deepest nesting of skipped groups (prost allows as many).
    const MAX_GROUP_DEPTH: usize = 100;

    struct Reader<'a> {
        b: &'a [u8],
        pos: usize,
        /// Offset of `b` in the whole message, for error messages.
        base: usize,
    }

    impl<'a> Reader<'a> {
        fn new(b: &'a [u8], base: usize) -> Self {
            Reader { b, pos: 0, base }
        }

        fn done(&self) -> bool {
            self.pos >= self.b.len()
        }

        fn err(&self, what: &str) -> String {
            format!("protobuf WriteRequest: {what} at byte {}", self.base + self.pos)
        }

        fn varint(&mut self) -> Result<u64, String> {
            crate::varint::read_uvarint(self.b, &mut self.pos).map_err(|e| match e {
                crate::varint::VarintError::Truncated => self.err("truncated varint"),
                crate::varint::VarintError::Overlong => self.err("varint longer than 64 bits"),
            })
        }

        fn fixed64(&mut self) -> Result<u64, String> {
            let Some(bytes) = self.b.get(self.pos..self.pos + 8) else {
                return Err(self.err("truncated fixed64"));
            };
            self.pos += 8;
            let mut a = [0u8; 8];
            a.copy_from_slice(bytes);
            Ok(u64::from_le_bytes(a))
        }

        fn bytes(&mut self) -> Result<(&'a [u8], usize), String> {
            let len = self.varint()? as usize;
            let start = self.pos;
            let Some(end) = start.checked_add(len).filter(|e| *e <= self.b.len()) else {
                return Err(self.err("length-delimited field runs past the end"));
            };
            self.pos = end;
            Ok((&self.b[start..end], self.base + start))
        }

        fn str(&mut self) -> Result<&'a str, String> {
            let (b, at) = self.bytes()?;
            std::str::from_utf8(b).map_err(|_| format!("protobuf WriteRequest: invalid UTF-8 in a label at byte {at}"))
        }

        /// Field number and wire type of the next field.
        fn key(&mut self) -> Result<(u64, u8), String> {
            let k = self.varint()?;
            Ok((k >> 3, (k & 7) as u8))
        }

        /// Skips the value of field `field` sent with wire type `wire`. A
        /// group (wire type 3, deprecated but still valid protobuf) is skipped
        /// up to its matching end tag, as prost and Go's decoders do.
        fn skip(&mut self, field: u64, wire: u8) -> Result<(), String> {
            match wire {
                0 => self.varint().map(|_| ()),
                1 => self.fixed64().map(|_| ()),
                2 => self.bytes().map(|_| ()),
                3 => {
                    let mut open = vec![field];
                    while let Some(&top) = open.last() {
                        match self.key()? {
                            (f, 3) if open.len() < MAX_GROUP_DEPTH => open.push(f),
                            (_, 3) => return Err(self.err("groups nested too deep")),
                            (f, 4) if f == top => {
                                open.pop();
                            }
                            (_, 4) => return Err(self.err("end-group tag does not match its group")),
                            (f, w) => self.skip(f, w)?,
                        }
                    }
                    Ok(())
                }
                5 => {
                    if self.pos + 4 > self.b.len() {
                        return Err(self.err("truncated fixed32"));
                    }
                    self.pos += 4;
                    Ok(())
                }
                w => Err(self.err(&format!("unsupported wire type {w}"))),
            }
        }
    }

    /// One decoded `MetricMetadata`.
    #[derive(Debug, Default, PartialEq)]
    pub struct Metadata<'a> {
        /// Type number (prompb's `MetricType`).
        pub typ: i32,
        /// Family name.
        pub family: &'a str,
        /// Help text.
        pub help: &'a str,
        /// Unit.
        pub unit: &'a str,
    }

    /// The `MetricMetadata` entries of a request, in order.
    pub fn metadata(buf: &[u8]) -> Result<Vec<Metadata<'_>>, String> {
        let mut r = Reader::new(buf, 0);
        let mut out = Vec::new();
        while !r.done() {
            let (field, wire) = r.key()?;
            if field == 3 && wire == 2 {
                let (b, at) = r.bytes()?;
                let mut m = Reader::new(b, at);
                let mut md = Metadata::default();
                while !m.done() {
                    match m.key()? {
                        (1, 0) => md.typ = m.varint()? as i32,
                        (2, 2) => md.family = m.str()?,
                        (4, 2) => md.help = m.str()?,
                        (5, 2) => md.unit = m.str()?,
                        (f, w) => m.skip(f, w)?,
                    }
                }
                out.push(md);
            } else {
                r.skip(field, wire)?;
            }
        }
        Ok(out)
    }

    /// Calls `f(index, series)` for every `TimeSeries` of the request, in
    /// order; stops at the first error (of decoding or of `f`).
    pub fn for_each_series<'a>(buf: &'a [u8], mut f: impl FnMut(usize, &Series<'a>) -> Result<(), String>) -> Result<(), String> {
        let mut r = Reader::new(buf, 0);
        let mut ts = Series::default();
        let mut i = 0usize;
        while !r.done() {
            let (field, wire) = r.key()?;
            if field == 1 && wire == 2 {
                let (b, at) = r.bytes()?;
                ts.labels.clear();
                ts.samples.clear();
                ts.histograms = 0;
                ts.exemplars = 0;
                series(b, at, &mut ts)?;
                f(i, &ts)?;
                i += 1;
            } else {
                r.skip(field, wire)?;
            }
        }
        Ok(())
    }

    fn series<'a>(b: &'a [u8], base: usize, ts: &mut Series<'a>) -> Result<(), String> {
        let mut r = Reader::new(b, base);
        while !r.done() {
            let (field, wire) = r.key()?;
            match (field, wire) {
                (1, 2) => {
                    let (lb, at) = r.bytes()?;
                    let mut l = Reader::new(lb, at);
                    let (mut name, mut value) = ("", "");
                    while !l.done() {
                        match l.key()? {
                            (1, 2) => name = l.str()?,
                            (2, 2) => value = l.str()?,
                            (f, w) => l.skip(f, w)?,
                        }
                    }
                    ts.labels.push((name, value));
                }
                (2, 2) => {
                    let (sb, at) = r.bytes()?;
                    let mut s = Reader::new(sb, at);
                    let (mut v, mut t) = (0f64, 0i64);
                    while !s.done() {
                        match s.key()? {
                            (1, 1) => v = f64::from_bits(s.fixed64()?),
                            (2, 0) => t = s.varint()? as i64,
                            (f, w) => s.skip(f, w)?,
                        }
                    }
                    ts.samples.push((t, v));
                }
                (3, 2) => {
                    r.skip(3, 2)?;
                    ts.exemplars += 1;
                }
                (4, 2) => {
                    r.skip(4, 2)?;
                    ts.histograms += 1;
                }
                (f, w) => r.skip(f, w)?,
            }
        }
        Ok(())
    }
}

fn reply(m: &RemoteWriteMetrics, code: StatusCode, msg: String) -> Response {
    m.request(code);
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg + "\n").into_response()
}

/// Snappy-decompresses a request body (block format), refusing one that
/// announces more than [`MAX_DECODED`] bytes before allocating for it.
#[cfg(feature = "fuzzing")]
pub(crate) fn decompress(body: &[u8]) -> Result<Vec<u8>, (StatusCode, String)> {
    decompress_max(body, MAX_DECODED)
}

/// Snappy-decompresses a request body, refusing (413, naming
/// `max_remote_write_decompressed_bytes`) one whose header announces more
/// than `max` bytes, before allocating or decompressing anything.
pub(crate) fn decompress_max(body: &[u8], max: usize) -> Result<Vec<u8>, (StatusCode, String)> {
    let decoded_len = snap::raw::decompress_len(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("snappy: {e}")))?;
    if decoded_len > max {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the snappy header announces a decompressed body of {decoded_len} bytes, over max_remote_write_decompressed_bytes {max}; nothing of this request was stored"
            ),
        ));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("snappy: {e}")))
}

async fn write(State(st): State<RemoteWriteState>, headers: HeaderMap, body: Bytes) -> Response {
    let m = &st.metrics;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer);
    let Some(commons) = token.and_then(|t| st.auth.load().authenticate(t).map(str::to_string)) else {
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
    let raw = match decompress_max(&body, st.max_decoded()) {
        Ok(r) => r,
        Err((code, msg)) => {
            if code == StatusCode::PAYLOAD_TOO_LARGE {
                st.limit_metrics.rejected("max_remote_write_decompressed_bytes", &commons);
                tracing::warn!(commons = %commons, "refused a remote write request: {msg}");
            }
            return reply(m, code, msg);
        }
    };
    let mut used = Vec::new();
    let (app, histograms, exemplars) = match build(&st, &commons, &raw, &mut used) {
        Ok(r) => r,
        Err(msg) => return reply(m, StatusCode::BAD_REQUEST, msg),
    };
    // The per-agent limits (they count the rejection themselves).
    if let Err(e) = st.limiter.admit(&commons, REMOTE_WRITE_AGENT, &used) {
        tracing::warn!(commons = %commons, limit = e.limit, "refused a remote write request: {}", e.message);
        let msg = format!("{}; nothing of this request was stored", e.message);
        if e.retryable {
            m.request(StatusCode::TOO_MANY_REQUESTS);
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, msg + "\n").into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return resp;
        }
        return reply(m, StatusCode::BAD_REQUEST, msg);
    }
    let metadata = match wire::metadata(&raw) {
        Ok(md) => md,
        Err(msg) => return reply(m, StatusCode::BAD_REQUEST, msg),
    };
    let record_metadata = || {
        st.metadata
            .record_all(&commons, metadata.iter().map(|d| (d.family, d.typ, d.help, d.unit)));
    };
    m.drop_items("native_histogram", histograms);
    m.drop_items("exemplar", exemplars);
    if histograms > 0 {
        tracing::warn!(commons = %commons, histograms, "remote write: native histogram samples are not stored by this version");
    }
    let n = app.len() as u64;
    if n == 0 {
        record_metadata();
        return reply(m, StatusCode::NO_CONTENT, String::new());
    }
    match app.commit().await {
        Ok(_) => {
            record_metadata();
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
    use csoc_proto::prometheus::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
    use prost::Message;
    use tower::ServiceExt;

    const TOKEN: &str = "remote-write-token-0123456789";

    fn setup() -> (tempfile::TempDir, Tsdb, Router) {
        setup_with(Limits::default())
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
        use crate::tsdb::Queryable;
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

    #[test]
    fn borrowing_decoder_agrees_with_prost_and_never_panics() {
        let req = WriteRequest {
            timeseries: vec![
                TimeSeries {
                    exemplars: vec![vec![1, 2, 3]],
                    histograms: vec![vec![], vec![9]],
                    ..series(
                        &[("job", "n"), ("__name__", "up"), ("é", "ü")],
                        &[(-5, -0.0), (i64::MAX, f64::NAN), (0, 1e300)],
                    )
                },
                series(&[], &[]),
                series(&[("a", "")], &[(1, f64::from_bits(csoc_proto::STALE_NAN_BITS))]),
            ],
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "up".into(),
                help: "h".into(),
                unit: String::new(),
            }],
        };
        let bytes = req.encode_to_vec();
        type Decoded = (Vec<(String, String)>, Vec<(i64, u64)>, u64, u64);
        let mut got: Vec<Decoded> = Vec::new();
        wire::for_each_series(&bytes, |_, ts| {
            got.push((
                ts.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ts.samples.iter().map(|(t, v)| (*t, v.to_bits())).collect(),
                ts.histograms,
                ts.exemplars,
            ));
            Ok(())
        })
        .expect("decode");
        // Compare with prost's decoding of the same bytes (its encoder drops
        // proto3 defaults such as -0.0, so the original request differs).
        let reference = WriteRequest::decode(bytes.as_slice()).expect("prost decode");
        let want: Vec<_> = reference
            .timeseries
            .iter()
            .map(|ts| {
                (
                    ts.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect::<Vec<_>>(),
                    ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect::<Vec<_>>(),
                    ts.histograms.len() as u64,
                    ts.exemplars.len() as u64,
                )
            })
            .collect();
        assert_eq!(got, want);
        for cut in 0..bytes.len() {
            // Errors or a shorter result, never a panic.
            let _ = wire::for_each_series(&bytes[..cut], |_, _| Ok(()));
        }
        let err = wire::for_each_series(&[0x0a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0xff], |_, _| Ok(())).expect_err("bad utf-8");
        assert!(err.contains("UTF-8") && err.contains("byte 6"), "{err}");
    }

    /// Found by the `remote_write` fuzz target: unknown fields sent as groups
    /// (wire types 3/4) are valid protobuf that prost skips; the decoder
    /// refused them ("unsupported wire type 3").
    #[test]
    fn unknown_groups_are_skipped_like_prost() {
        let count = |b: &[u8]| {
            let mut n = 0;
            wire::for_each_series(b, |_, ts| {
                n += ts.samples.len();
                Ok(())
            })
            .map(|_| n)
        };
        // The fuzzer's input: an empty group, field 5.
        assert_eq!(count(&[0x2b, 0x2c]), Ok(0));
        assert!(WriteRequest::decode(&[0x2b, 0x2c][..]).is_ok());
        // A group holding fields of every wire type and a nested group, at
        // the top level and inside a TimeSeries before its sample.
        let group = [
            0x2b, 0x08, 0x01, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0x1a, 0x01, 0xff, 0x25, 0, 0, 0, 0, 0x33, 0x34, 0x2c,
        ];
        let sample = [0x12, 0x0b, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x01];
        let mut ts = group.to_vec();
        ts.extend_from_slice(&sample);
        let mut req = group.to_vec();
        req.push(0x0a);
        req.push(ts.len() as u8);
        req.extend_from_slice(&ts);
        assert_eq!(count(&req), Ok(1));
        let reference = WriteRequest::decode(req.as_slice()).expect("prost");
        assert_eq!(reference.timeseries[0].samples, vec![Sample { value: 1.0, timestamp: 1 }]);
        assert!(wire::metadata(&req).is_ok());
        // Refused: an end without a start, a mismatched end, an unterminated
        // group, and nesting deeper than prost's limit.
        for bad in [&[0x2c][..], &[0x2b, 0x34], &[0x2b, 0x08, 0x01]] {
            assert!(count(bad).is_err(), "{bad:?}");
            assert!(WriteRequest::decode(bad).is_err(), "{bad:?}");
        }
        let deep: Vec<u8> = std::iter::repeat_n(0x2b, 101).chain(std::iter::repeat_n(0x2c, 101)).collect();
        assert!(count(&deep).expect_err("too deep").contains("nested too deep"));
        let ok: Vec<u8> = std::iter::repeat_n(0x2b, 100).chain(std::iter::repeat_n(0x2c, 100)).collect();
        assert_eq!(count(&ok), Ok(0));
    }

    #[tokio::test]
    async fn known_series_take_the_fast_path_with_the_same_result() {
        let (_d, tsdb, app) = setup();
        let req = |t: i64| WriteRequest {
            timeseries: vec![series(&[("job", "node"), ("__name__", "up")], &[(t, t as f64)])],
            ..Default::default()
        };
        for t in [1000, 2000] {
            let (code, msg) = post(&app, Some(TOKEN), body(&req(t))).await;
            assert_eq!(code, StatusCode::NO_CONTENT, "{msg}");
        }
        let s = stored(&tsdb);
        assert_eq!(s.len(), 1, "unsorted labels from the sender map to one series");
        assert_eq!(s[0].samples, vec![(1000, 1000.0), (2000, 2000.0)]);
    }

    #[tokio::test]
    async fn metadata_is_recorded_also_from_metadata_only_requests() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::default();
        let tsdb = Tsdb::open(d.path(), &crate::tsdb::TsdbOptions::default(), &mut reg).expect("open");
        let mut auth = AgentAuth::default();
        auth.add_token("alpha", TOKEN);
        let store = Arc::new(MetadataStore::default());
        let app = router(RemoteWriteState {
            limiter: Arc::new(Limiter::new(Limits::default(), Default::default())),
            limit_metrics: Default::default(),
            tsdb,
            auth: auth.into(),
            limits: Limits::default().into(),
            ingest_metrics: crate::metrics::CollectorMetrics::new(&mut reg).ingest,
            metrics: RemoteWriteMetrics::new(&mut reg),
            metadata: store.clone(),
        });
        // Prometheus sends metadata in requests of their own, without samples.
        let req = WriteRequest {
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "http_requests_total".into(),
                help: "Requests.".into(),
                unit: String::new(),
            }],
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        let decoded = wire::metadata(&bytes).expect("decode");
        assert_eq!(decoded.len(), 1);
        assert_eq!(
            (decoded[0].typ, decoded[0].family, decoded[0].help),
            (1, "http_requests_total", "Requests.")
        );
        let (code, msg) = post(&app, Some(TOKEN), body(&req)).await;
        assert_eq!(code, StatusCode::NO_CONTENT, "{msg}");
        let q = store.query(Some("http_requests_total"), None, None);
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].1[0].typ, q[0].1[0].help.as_str()), ("counter", "Requests."));
        // Not from a refused request.
        let other = WriteRequest {
            metadata: vec![MetricMetadata {
                r#type: 2,
                metric_family_name: "sneaky".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(post(&app, None, body(&other)).await.0, StatusCode::UNAUTHORIZED);
        assert!(store.query(Some("sneaky"), None, None).is_empty());
    }

    fn setup_with(limits: Limits) -> (tempfile::TempDir, Tsdb, Router) {
        let d = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::default();
        let tsdb = Tsdb::open(d.path(), &crate::tsdb::TsdbOptions::default(), &mut reg).expect("open");
        let mut auth = AgentAuth::default();
        auth.add_token("alpha", TOKEN);
        let st = RemoteWriteState {
            limiter: Arc::new(Limiter::new(limits.clone(), Default::default())),
            limit_metrics: Default::default(),
            tsdb: tsdb.clone(),
            auth: auth.into(),
            limits: limits.into(),
            ingest_metrics: crate::metrics::CollectorMetrics::new(&mut reg).ingest,
            metrics: RemoteWriteMetrics::new(&mut reg),
            metadata: Arc::default(),
        };
        (d, tsdb, router(st))
    }

    #[tokio::test]
    async fn per_agent_limits_refuse_whole_requests() {
        let (_d, tsdb, app) = setup_with(Limits {
            max_series_per_agent: 2,
            ..Limits::default()
        });
        let req = |names: &[&str]| WriteRequest {
            timeseries: names.iter().map(|n| series(&[("__name__", n)], &[(1000, 1.0)])).collect(),
            ..Default::default()
        };
        assert_eq!(post(&app, Some(TOKEN), body(&req(&["a", "b"]))).await.0, StatusCode::NO_CONTENT);
        let (code, msg) = post(&app, Some(TOKEN), body(&req(&["a", "c"]))).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(msg.contains("max_series_per_agent"), "{msg}");
        assert_eq!(stored(&tsdb).len(), 2, "nothing of the refused request");

        let (_d, tsdb, app) = setup_with(Limits {
            max_samples_per_second: 1,
            ..Limits::default()
        });
        let many: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(post(&app, Some(TOKEN), body(&req(&many))).await.0, StatusCode::NO_CONTENT);
        let (code, msg) = post(&app, Some(TOKEN), body(&req(&["late"]))).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
        assert!(msg.contains("max_samples_per_second"), "{msg}");
        assert_eq!(stored(&tsdb).len(), 20);
    }

    #[tokio::test]
    async fn a_huge_announced_size_is_refused_before_decompressing() {
        let (_d, _tsdb, app) = setup_with(Limits {
            max_remote_write_decompressed_bytes: 1 << 20,
            ..Limits::default()
        });
        // The header announces 2 MiB; the body is a few bytes.
        let (code, msg) = post(&app, Some(TOKEN), vec![0x80, 0x80, 0x80, 0x01, 0, 0, 0]).await;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(msg.contains("max_remote_write_decompressed_bytes"), "{msg}");
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
