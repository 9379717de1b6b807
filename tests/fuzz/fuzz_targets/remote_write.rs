//! The collector's remote-write 1.0 decoding: the snappy step and the
//! borrowing protobuf decoder of `WriteRequest` (series and metadata).
//!
//! Input: the first byte's low bit picks the path (0: the rest is the
//! decompressed protobuf; 1: the rest is a request body, which goes through
//! the receiver's snappy step first). Beyond "no panic":
//! - compressing the protobuf and running the receiver's snappy step gives
//!   it back unchanged;
//! - differential against prost: when prost decodes the bytes as a
//!   `WriteRequest`, our decoder succeeds too, with the same labels (in
//!   order), samples (bit for bit), exemplar and histogram counts, and
//!   metadata;
//! - when prost refuses the bytes for invalid UTF-8, our decoder refuses
//!   them too (its labels are `&str`, so what it yields is always UTF-8);
//! - validating every decoded series as the receiver does never panics,
//!   and a valid one is sorted, unique and carries our `commons`.
#![no_main]

use csoc_collector::ingest::fuzzing::{
    DecodedSeries, remote_write_decompress, remote_write_metadata, remote_write_series, validate_series,
};
use csoc_proto::prometheus::WriteRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    if sel & 1 == 1 {
        if let Ok(raw) = remote_write_decompress(rest) {
            check(&raw);
        }
        return;
    }
    let body = snap::raw::Encoder::new().compress_vec(rest).expect("snappy compresses anything");
    let raw = remote_write_decompress(&body).expect("our own snappy body");
    assert_eq!(raw, rest, "snappy round trip");
    check(rest);
});

fn check(raw: &[u8]) {
    let ours = remote_write_series(raw);
    let md = remote_write_metadata(raw);
    match WriteRequest::decode(raw) {
        Ok(req) => {
            let want: Vec<DecodedSeries> = req
                .timeseries
                .iter()
                .map(|ts| DecodedSeries {
                    labels: ts.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
                    samples: ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect(),
                    histograms: ts.histograms.len() as u64,
                    exemplars: ts.exemplars.len() as u64,
                })
                .collect();
            match &ours {
                Ok(got) => assert_eq!(got, &want, "our decoder and prost disagree"),
                Err(e) => panic!("prost decodes it, our decoder refuses it: {e}"),
            }
            let want_md: Vec<(i32, String, String, String)> = req
                .metadata
                .iter()
                .map(|m| (m.r#type, m.metric_family_name.clone(), m.help.clone(), m.unit.clone()))
                .collect();
            match &md {
                Ok(got) => assert_eq!(got, &want_md, "metadata: our decoder and prost disagree"),
                Err(e) => panic!("prost decodes it, our metadata decoder refuses it: {e}"),
            }
        }
        Err(e) => {
            if e.to_string().contains("UTF-8") {
                assert!(
                    ours.is_err() || md.is_err(),
                    "prost refuses invalid UTF-8 ({e}), our decoder accepts it"
                );
            }
        }
    }
    if let Ok(series) = ours {
        for s in series {
            if let Ok(labels) = validate_series(s.labels, "fuzz") {
                assert!(labels.windows(2).all(|w| w[0].0 < w[1].0), "{labels:?}");
                assert!(labels.iter().any(|(k, v)| k == "commons" && v == "fuzz"), "{labels:?}");
                assert!(labels.iter().all(|(_, v)| !v.is_empty()), "{labels:?}");
            }
        }
    }
}
