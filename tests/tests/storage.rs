//! Storage crash safety: SIGKILL the collector mid-ingest, again and again,
//! and check that every acknowledged sample is served after each restart.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csoc_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use csoc_tests::*;
use prost::Message;

const TOKEN: &str = "crash-test-token-0123456789";
const SERIES_PER_WRITER: usize = 40;

fn request(writer: usize, i: i64, base: i64) -> Vec<u8> {
    let timeseries = (0..SERIES_PER_WRITER)
        .map(|k| TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "crash_test".into(),
                },
                Label {
                    name: "k".into(),
                    value: k.to_string(),
                },
                Label {
                    name: "writer".into(),
                    value: writer.to_string(),
                },
            ],
            samples: vec![Sample {
                value: i as f64,
                timestamp: base + i * 1000,
            }],
            ..Default::default()
        })
        .collect();
    let req = WriteRequest {
        timeseries,
        ..Default::default()
    };
    snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).expect("snappy")
}

/// Sends numbered requests until the collector goes away; records the
/// numbers that were acknowledged (204).
fn writer_loop(url: String, writer: usize, start: i64, base: i64, acked: Arc<Mutex<BTreeSet<i64>>>, stop: Arc<AtomicBool>) -> i64 {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut i = start;
    while !stop.load(Ordering::Relaxed) {
        let r = client
            .post(&url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("Authorization", format!("Bearer {TOKEN}"))
            .body(request(writer, i, base))
            .send();
        match r {
            Ok(resp) if resp.status().as_u16() == 204 => {
                acked.lock().expect("lock").insert(i);
            }
            Ok(resp) => panic!("unexpected status {}: {:?}", resp.status(), resp.text()),
            Err(_) => break, // killed
        }
        i += 1;
    }
    i
}

#[test]
fn sigkill_mid_ingest_loses_no_acknowledged_sample() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (hp, gp) = (free_port(), free_port());
    let tok = format!("crash={TOKEN}");
    let base = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64 - 3_600_000;
    let writers = 2usize;
    let acked: Vec<Arc<Mutex<BTreeSet<i64>>>> = (0..writers).map(|_| Arc::new(Mutex::new(BTreeSet::new()))).collect();
    let mut next: Vec<i64> = vec![0; writers];
    // Deterministic kill delays between 300 ms and 1.5 s.
    let delays_ms = [700u64, 300, 1500, 450, 1100];
    for (round, delay) in delays_ms.iter().enumerate() {
        let mut c = Collector::start_on(dir.path(), hp, gp, &["--agent-token", &tok])?;
        let url = format!("{}/api/v1/write", c.http);
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (url, acked, stop, start) = (url.clone(), acked[w].clone(), stop.clone(), next[w]);
                std::thread::spawn(move || writer_loop(url, w, start, base, acked, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(*delay));
        c.proc.kill9();
        stop.store(true, Ordering::Relaxed);
        for (w, h) in handles.into_iter().enumerate() {
            next[w] = h.join().map_err(|_| anyhow::anyhow!("writer panicked"))?;
        }
        let total: usize = acked.iter().map(|a| a.lock().map(|s| s.len()).unwrap_or(0)).sum();
        eprintln!("round {round}: killed after {delay} ms; {total} requests acknowledged so far");
    }

    // Restart once more and check every acknowledged sample.
    let c = Collector::start_on(dir.path(), hp, gp, &["--agent-token", &tok])?;
    let end_s = (base + *next.iter().max().unwrap_or(&0) * 1000) / 1000 + 1;
    let url = format!("{}/api/v1/query?query={}&time={end_s}", c.http, urlencode("crash_test[1d]"));
    let (code, v) = get_json(&url)?;
    assert_eq!(code, 200, "{v}");
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    assert_eq!(result.len(), writers * SERIES_PER_WRITER, "every series is there");
    let mut checked = 0usize;
    for s in &result {
        let w: usize = s["metric"]["writer"].as_str().and_then(|x| x.parse().ok()).expect("writer label");
        let stored: std::collections::HashMap<i64, f64> = s["values"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| Some(((p[0].as_f64()? * 1000.0).round() as i64, p[1].as_str()?.parse::<f64>().ok()?)))
                    .collect()
            })
            .unwrap_or_default();
        let acked_w = acked[w].lock().expect("lock").clone();
        assert!(!acked_w.is_empty(), "writer {w} got acknowledgements");
        for i in acked_w {
            let t = base + i * 1000;
            assert_eq!(
                stored.get(&t),
                Some(&(i as f64)),
                "acknowledged sample {i} of {:?} is missing or wrong",
                s["metric"]
            );
            checked += 1;
        }
    }
    eprintln!("verified {checked} acknowledged samples after 5 SIGKILLs");
    let log = c.proc.log_text();
    assert!(log.contains("WAL replayed") || log.contains("storage opened"), "{log}");
    Ok(())
}
