//! Round trips, error reports and robustness of the public entry points
//! ([`XorChunk`], [`encode_block`] / [`decode_block`]), and the size and speed report.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

use super::decimal::decimal_value;

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

fn special_values() -> Vec<f64> {
    [
        STALE_NAN,
        f64::NAN.to_bits(),
        0x7ff8_0000_0000_0001,
        0xfff8_0000_0000_0000,
        0x7ff0_0000_0000_0001,
        u64::MAX,
        (-0.0f64).to_bits(),
        0.0f64.to_bits(),
        f64::INFINITY.to_bits(),
        f64::NEG_INFINITY.to_bits(),
        1,
        0x000f_ffff_ffff_ffff,
        0x8000_0000_0000_0001,
        f64::MIN_POSITIVE.to_bits(),
        f64::MAX.to_bits(),
        f64::MIN.to_bits(),
        f64::EPSILON.to_bits(),
        1.0f64.to_bits(),
        (-1.0f64).to_bits(),
        0.1f64.to_bits(),
        (0.1f64 + 0.2).to_bits(),
        1e300f64.to_bits(),
        1e-300f64.to_bits(),
        9_007_199_254_740_992.0f64.to_bits(),
        9_007_199_254_740_994.0f64.to_bits(),
        1.844_674_407_370_955_2e19f64.to_bits(),
        1e22f64.to_bits(),
        1e23f64.to_bits(),
        1e-22f64.to_bits(),
        1e-23f64.to_bits(),
    ]
    .into_iter()
    .map(f64::from_bits)
    .collect()
}

fn bits_of(s: &[(i64, f64)]) -> Vec<(i64, u64)> {
    s.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

fn xor_chunk(samples: &[(i64, f64)]) -> XorChunk {
    let mut c = XorChunk::new();
    for &(t, v) in samples {
        c.append(t, v);
    }
    c
}

fn block(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_block(samples, &mut out);
    out
}

/// Checks both encodings round-trip `samples` bit for bit.
fn roundtrip(samples: &[(i64, f64)]) {
    let want = bits_of(samples);
    let c = xor_chunk(samples);
    assert_eq!(c.len(), samples.len());
    assert_eq!(c.is_empty(), samples.is_empty());
    assert_eq!(c.min_time(), samples.first().map(|s| s.0));
    assert_eq!(c.max_time(), samples.last().map(|s| s.0));
    let it = c.iter();
    assert_eq!(bits_of(&it.collect::<Vec<_>>()), want, "xor iter");
    let bytes = c.to_bytes();
    assert_eq!(bytes.len(), c.encoded_len());
    assert_eq!(bits_of(&XorChunk::decode(&bytes).expect("xor decode")), want, "xor decode");

    let mut out = vec![0xAA];
    encode_block(samples, &mut out);
    assert_eq!(out[0], 0xAA, "encode_block appends");
    assert_eq!(bits_of(&decode_block(&out[1..]).expect("block decode")), want, "block decode");
}

fn regular(n: usize, start: i64, step: i64, v: impl Fn(usize) -> f64) -> Vec<(i64, f64)> {
    (0..n).map(|i| (start + i as i64 * step, v(i))).collect()
}

fn value_encoding(block: &[u8]) -> u8 {
    (block[0] >> 2) & 3
}

#[test]
fn empty() {
    let c = XorChunk::new();
    assert_eq!((c.len(), c.min_time(), c.max_time(), c.heap_bytes()), (0, None, None, 0));
    assert_eq!(c.iter().count(), 0);
    assert_eq!(c.to_bytes(), vec![XOR_CHUNK_FORMAT, 0]);
    assert_eq!(XorChunk::decode(&[XOR_CHUNK_FORMAT, 0]).expect("decode"), vec![]);
    assert_eq!(block(&[]), vec![0x20, 0]);
    assert_eq!(decode_block(&[0x20, 0]).expect("decode"), vec![]);
    assert_eq!(decode_block(&[0x20, 0, 0, 0]).expect("decode"), vec![]);
    roundtrip(&[]);
}

#[test]
fn one_sample() {
    for t in [0, 1, -1, 1_700_000_000_000, i64::MIN, i64::MAX] {
        for v in special_values() {
            roundtrip(&[(t, v)]);
        }
    }
}

#[test]
fn extreme_timestamps() {
    roundtrip(&[(i64::MIN, 1.0), (i64::MAX, 2.0)]);
    roundtrip(&[(i64::MIN, 1.0), (0, 2.0), (i64::MAX, 3.0)]);
    roundtrip(&[
        (i64::MIN, 1.0),
        (i64::MIN + 1, 2.0),
        (-1, 3.0),
        (0, 4.0),
        (1, 5.0),
        (i64::MAX - 1, 6.0),
        (i64::MAX, 7.0),
    ]);
    roundtrip(&regular(50, i64::MIN, 1 << 57, |i| i as f64));
    roundtrip(&regular(50, -1_000_000, 15_000, |i| i as f64));
    roundtrip(&regular(50, i64::MAX - 49, 1, |_| 0.5));
}

#[test]
fn irregular_intervals_and_jumps() {
    let mut t = 1_700_000_000_000i64;
    let mut s = Vec::new();
    let steps = [
        1,
        15_000,
        14_999,
        15_003,
        1,
        2,
        86_400_000 * 30,
        15_000,
        15_000,
        63,
        64,
        65,
        8191,
        8192,
        8193,
        8_388_607,
        8_388_608,
        1 << 40,
    ];
    for (i, step) in steps.iter().cycle().take(400).enumerate() {
        t += step;
        s.push((t, (i % 7) as f64 * 0.25));
    }
    roundtrip(&s);
    // Every delta-of-delta bucket boundary, both signs.
    let mut t = 0i64;
    let mut d = 1_000_000i64;
    let mut s = vec![(0, 0.0)];
    for dod in [
        0,
        1,
        -1,
        63,
        -64,
        64,
        -65,
        8191,
        -8192,
        8192,
        -8193,
        8_388_607,
        -8_388_608,
        8_388_608,
        -8_388_609,
        1 << 40,
    ] {
        d += dod;
        t += d;
        s.push((t, 1.0));
    }
    roundtrip(&s);
}

#[test]
fn special_floats() {
    let specials = special_values();
    roundtrip(&regular(specials.len(), 1000, 15_000, |i| specials[i]));
    for &v in &specials {
        roundtrip(&regular(130, 0, 15_000, |_| v));
        roundtrip(&regular(130, 0, 15_000, |i| if i % 2 == 0 { v } else { 1.5 }));
    }
    // A decimal series ending in a staleness marker stays decimal, with one exception.
    let mut s = regular(200, 0, 15_000, |i| i as f64 / 100.0);
    s.push((200 * 15_000, f64::from_bits(STALE_NAN)));
    s.push((201 * 15_000, -0.0));
    roundtrip(&s);
    assert_eq!(value_encoding(&block(&s)), VENC_DECIMAL);
}

#[test]
fn long_constant_runs() {
    let s = regular(100_000, 1_700_000_000_000, 15_000, |_| 42.0);
    roundtrip(&s);
    let c = xor_chunk(&s);
    assert!(c.encoded_len() < 100_000 * 2 / 8 + 64, "{}", c.encoded_len());
    let b = block(&s);
    assert_eq!(value_encoding(&b), VENC_CONST);
    // Perfectly regular and constant: only the expansion bound's padding grows.
    assert!(b.len() <= 100_000usize.div_ceil(MAX_EXPANSION) + 1, "{}", b.len());
    assert!(b[20..].iter().all(|&x| x == 0));
    let mut jittered = s.clone();
    for (i, x) in jittered.iter_mut().enumerate() {
        x.0 += (i as i64 * 7919) % 5;
    }
    roundtrip(&jittered);
    assert!(block(&jittered).len() < 100_000 / 2);
    let nan_run = regular(5000, 0, 15_000, |_| f64::from_bits(STALE_NAN));
    roundtrip(&nan_run);
    assert!(block(&nan_run).len() < 24);
}

#[test]
fn alternating_values() {
    roundtrip(&regular(1000, 0, 15_000, |i| if i % 2 == 0 { 1.0 } else { 2.0 }));
    roundtrip(&regular(1000, 0, 15_000, |i| if i % 2 == 0 { 0.0 } else { -0.0 }));
    roundtrip(&regular(1000, 0, 15_000, |i| {
        if i % 2 == 0 { f64::NAN } else { f64::from_bits(STALE_NAN) }
    }));
    roundtrip(&regular(1000, 0, 15_000, |i| if i % 3 == 0 { f64::MAX } else { f64::from_bits(1) }));
}

#[test]
fn counters_and_gauges_use_decimal() {
    let counter = regular(720, 1_700_000_000_000, 15_000, |i| (i * i % 97 + i * 150) as f64 / 100.0);
    roundtrip(&counter);
    let b = block(&counter);
    assert_eq!(value_encoding(&b), VENC_DECIMAL);
    assert!(
        b.len() < xor_chunk(&counter).encoded_len() / 2,
        "{} vs {}",
        b.len(),
        xor_chunk(&counter).encoded_len()
    );
    let big = regular(300, 0, 15_000, |i| 1e20 + (i as f64) * 1e15);
    roundtrip(&big);
    let tiny = regular(300, 0, 15_000, |i| (i % 10) as f64 * 1e-9);
    roundtrip(&tiny);
    // Mixed precisions share the smallest exponent.
    let mixed = regular(300, 0, 15_000, |i| if i % 2 == 0 { 1234.0 } else { 0.000_001 * i as f64 });
    roundtrip(&mixed);
    // Full-precision floats fall back to xor or their bit patterns,
    // whichever is smaller.
    let noisy = regular(300, 0, 15_000, |i| (i as f64).sin());
    roundtrip(&noisy);
    let b = block(&noisy);
    assert!(matches!(value_encoding(&b), VENC_XOR | VENC_BITS));
    assert!(b.len() <= xor_chunk(&noisy).encoded_len(), "{}", b.len());
    // A clock in seconds with sub-millisecond noise, at full precision:
    // its bit patterns as integers, at about half of xor's size.
    let clock = regular(2880, 0, 15_000, |i| {
        let x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
        1.7e9 + i as f64 * 15.0 - 0.002 * ((x >> 11) as f64 / (1u64 << 53) as f64)
    });
    roundtrip(&clock);
    let b = block(&clock);
    assert_eq!(value_encoding(&b), VENC_BITS);
    assert!(
        b.len() * 2 < xor_chunk(&clock).encoded_len() + 2880,
        "{} against xor {}",
        b.len(),
        xor_chunk(&clock).encoded_len()
    );
    // Bit patterns that cross signs and exponents still round-trip.
    roundtrip(&regular(50, 0, 15_000, |i| {
        [0.0, -0.0, f64::MIN_POSITIVE, -1e300, f64::INFINITY, f64::NAN][i % 6] * (1.0 + i as f64)
    }));
}

#[test]
fn decode_iter_streams_and_reports_errors() {
    let s = regular(300, 1_700_000_000_000, 15_000, |i| (i % 17) as f64 / 8.0);
    let bytes = xor_chunk(&s).to_bytes();
    let it = XorChunk::decode_iter(&bytes).expect("header");
    assert_eq!(bits_of(&it.collect::<Vec<_>>()), bits_of(&s));
    let mut it = XorChunk::decode_iter(&bytes[..bytes.len() / 2]).expect("header");
    let got = it.by_ref().count();
    assert!(got < s.len());
    assert!(matches!(it.error(), Some(ChunkError::Truncated { .. })));
}

#[test]
fn iterating_a_growing_chunk() {
    let mut c = XorChunk::new();
    let mut want = Vec::new();
    for i in 0..300i64 {
        let s = (
            i * 15_000 + (i * 13) % 11,
            if i % 5 == 0 {
                f64::from_bits(i as u64 * 0x1234_5678_9abc)
            } else {
                i as f64 / 4.0
            },
        );
        c.append(s.0, s.1);
        want.push(s);
        assert_eq!(bits_of(&c.iter().collect::<Vec<_>>()), bits_of(&want));
    }
}

#[test]
fn decode_errors() {
    assert!(matches!(XorChunk::decode(&[]), Err(ChunkError::Truncated { .. })));
    assert!(matches!(
        XorChunk::decode(&[0x20, 0]),
        Err(ChunkError::UnknownFormat { byte: 0x20, .. })
    ));
    assert!(matches!(
        XorChunk::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(ChunkError::TooManySamples { .. })
    ));
    assert!(matches!(
        XorChunk::decode(&[1, 0, 0]),
        Err(ChunkError::TrailingBytes { at: ByteOffset::Input(2) })
    ));
    assert!(matches!(decode_block(&[]), Err(ChunkError::Truncated { .. })));
    assert!(matches!(decode_block(&[0x01, 0]), Err(ChunkError::UnknownFormat { .. })));
    assert!(matches!(decode_block(&[0x21, 0]), Err(ChunkError::Invalid { .. })));
    assert!(matches!(
        decode_block(&[0x20, 0, 7]),
        Err(ChunkError::TrailingBytes { at: ByteOffset::Input(2) })
    ));
    assert!(matches!(
        decode_block(&[0x20, 0xff, 0xff, 0xff, 0x7f]),
        Err(ChunkError::TooManySamples { .. })
    ));
    assert!(matches!(
        decode_block(&[0x30, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        Err(ChunkError::Invalid { .. } | ChunkError::TooManySamples { .. })
    ));
    let s = regular(500, 0, 15_000, |i| (i * 7 % 13) as f64);
    let mut b = block(&s);
    assert_ne!(b[0] & HEADER_COMPRESSED, 0, "expected a compressed block");
    let last = b.len() - 1;
    b[last] ^= 0x55;
    let err = decode_block(&b).expect_err("corrupt input decoded");
    assert!(matches!(err, ChunkError::Decompress { .. } | ChunkError::Invalid { .. }), "{err:?}");
    // Messages are lower-case and say where.
    for e in [
        XorChunk::decode(&[1, 3, 5]).expect_err("corrupt input decoded"),
        decode_block(&[0x20, 0, 7]).expect_err("corrupt input decoded"),
        decode_block(&[0x60, 0]).expect_err("corrupt input decoded"),
        err,
    ] {
        let msg = e.to_string();
        assert!(msg.chars().next().expect("non-empty message").is_lowercase(), "{msg}");
        assert!(msg.contains("offset"), "{msg}");
    }
}

type Decoder = fn(&[u8]) -> Result<Vec<(i64, f64)>, ChunkError>;

/// Every prefix and every single-bit flip of `bytes` decodes without panicking.
fn mangle(bytes: &[u8], decode: Decoder) {
    for cut in 0..bytes.len() {
        let _ = decode(&bytes[..cut]);
    }
    let mut b = bytes.to_vec();
    for i in 0..b.len() * 8 {
        b[i / 8] ^= 1 << (i % 8);
        let _ = decode(&b);
        b[i / 8] ^= 1 << (i % 8);
    }
}

#[test]
fn corrupt_inputs_do_not_panic() {
    let specials = special_values();
    let sets = [
        regular(40, 1_700_000_000_000, 15_000, |i| (i * 3) as f64 * 0.01),
        regular(30, -5, 7, |i| specials[i % specials.len()]),
        regular(60, 0, 15_000, |i| 1.0 + (i % 4) as f64),
        regular(200, 0, 15_000, |i| (i * i) as f64),
    ];
    for s in &sets {
        let x = xor_chunk(s).to_bytes();
        mangle(&x, XorChunk::decode);
        for cut in 0..x.len() {
            assert!(XorChunk::decode(&x[..cut]).is_err(), "prefix {cut} of {} decoded", x.len());
        }
        mangle(&block(s), decode_block);
    }
}

fn sorted_timestamps(max: usize) -> impl Strategy<Value = Vec<i64>> {
    prop_oneof![
        prop::collection::btree_set(any::<i64>(), 0..max).prop_map(|s| s.into_iter().collect::<Vec<_>>()),
        (
            any::<i32>(),
            prop::collection::vec(
                prop_oneof![4 => Just(15_000i64), 4 => 14_990i64..15_010, 1 => 1i64..100_000_000],
                0..max
            )
        )
            .prop_map(|(start, steps)| {
                let mut t = i64::from(start) * 1000;
                steps
                    .into_iter()
                    .map(|d| {
                        t += d;
                        t
                    })
                    .collect()
            }),
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<u64>().prop_map(f64::from_bits),
        3 => (-1_000_000i64..1_000_000, -8i32..4).prop_map(|(m, e)| decimal_value(m, e)),
        1 => prop::sample::select(special_values()),
        1 => Just(42.0),
    ]
}

fn series(max: usize) -> impl Strategy<Value = Vec<(i64, f64)>> {
    (sorted_timestamps(max), prop::collection::vec(value(), max), 0usize..4).prop_map(|(ts, vs, mode)| {
        ts.into_iter()
            .zip(vs)
            .enumerate()
            .map(|(i, (t, v))| match mode {
                // Long runs of repeats, and runs of decimal values with an occasional oddity.
                1 if i % 5 != 0 => (t, 7.5),
                2 => (
                    t,
                    if v.is_finite() && v.abs() < 1e6 && v == v.trunc() {
                        v
                    } else {
                        (i as f64) * 0.5
                    },
                ),
                _ => (t, v),
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn prop_roundtrip(samples in series(300)) {
        roundtrip(&samples);
    }

    #[test]
    fn prop_random_bytes_do_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), head in 0u8..0x40) {
        let _ = XorChunk::decode(&bytes);
        let _ = decode_block(&bytes);
        let mut with_head = vec![head];
        with_head.extend_from_slice(&bytes);
        let _ = XorChunk::decode(&with_head);
        let _ = decode_block(&with_head);
    }

    #[test]
    fn prop_damaged_encodings_do_not_panic(samples in series(120), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        for enc in [xor_chunk(&samples).to_bytes(), block(&samples)] {
            let n = cut.index(enc.len() + 1);
            let _ = XorChunk::decode(&enc[..n]);
            let _ = decode_block(&enc[..n]);
            let mut bad = enc.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 1 << bit;
            let _ = XorChunk::decode(&bad);
            let _ = decode_block(&bad);
        }
        let x = xor_chunk(&samples).to_bytes();
        let n = cut.index(x.len());
        prop_assert!(XorChunk::decode(&x[..n]).is_err());
    }
}

// -----------------------------------------------------------------------
// Size and speed report on node_exporter-like data:
//   cargo test --release -- --ignored --nocapture chunkenc_report
// -----------------------------------------------------------------------

/// SplitMix64: a small deterministic generator for synthetic data (also used by the column tests).
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Constant,
    Counter,
    Gauge,
}

/// A synthetic series: its name, what it models and its samples.
type Series = (String, Kind, Vec<(i64, f64)>);

const EXPOSITION_FALLBACK: &str = "\
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 217.53
node_cpu_seconds_total{cpu=\"0\",mode=\"irq\"} 0
# TYPE node_network_receive_bytes_total counter
node_network_receive_bytes_total{device=\"eth0\"} 8.2463294e+07
# TYPE node_memory_MemFree_bytes gauge
node_memory_MemFree_bytes 2.3030423552e+10
# TYPE node_load1 gauge
node_load1 0.79
# TYPE node_memory_MemTotal_bytes gauge
node_memory_MemTotal_bytes 2.5276502016e+10
";

fn load_exposition() -> String {
    let candidates = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/node_exporter.prom"),
        "/work/shared/data/node_exporter.prom",
    ];
    candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| EXPOSITION_FALLBACK.to_owned())
}

/// Decimal places of a printed value: "217.53" → 2, "1.59744e+06" → 0, "9.4458e-05" → 9.
fn decimals(text: &str) -> u32 {
    let (mantissa, exp) = text
        .split_once(['e', 'E'])
        .map_or((text, 0), |(m, e)| (m, e.parse::<i32>().unwrap_or(0)));
    let frac = mantissa.split_once('.').map_or(0, |(_, f)| f.len() as i32);
    (frac - exp).max(0) as u32
}

/// `units × 10^-dec`, as an exporter printing that decimal would produce it.
fn from_units(units: i64, dec: u32) -> f64 {
    format!("{units}e-{dec}").parse().unwrap_or(0.0)
}

const CONSTANT_HINTS: [&str; 22] = [
    "_info",
    "boot_time",
    "start_time",
    "size_bytes",
    "size_bits",
    "Total_bytes",
    "_max",
    "maximum",
    "limit",
    "mtu",
    "speed",
    "flags",
    "iface",
    "protocol",
    "assign_type",
    "queue_length",
    "Hugepagesize",
    "DirectMap",
    "timex_",
    "filesystem_files{",
    "Forwarding",
    "sys_bytes",
];

/// Builds `n` samples per series of the exposition: 15 s scrapes with 0-5 ms of
/// jitter; zero counters and config-like gauges constant; counters growing by
/// noisy amounts at the printed precision; gauges random-walking around their value.
fn synthesize(text: &str, n: usize, seed: u64) -> Vec<Series> {
    let mut rng = Rng(seed);
    let mut types: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(ty)) = (it.next(), it.next()) {
                types.insert(name, ty);
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((series, text)) = line.rsplit_once(' ') else { continue };
        let Ok(v0) = text.parse::<f64>() else { continue };
        let name = series.split('{').next().unwrap_or(series);
        let family = ["_sum", "_count", "_bucket"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| types.contains_key(f))
            .unwrap_or(name);
        let ty = types.get(family).copied().unwrap_or("untyped");
        let monotonic =
            ty == "counter" || (ty == "untyped" && !series.contains("CurrEstab")) || name.ends_with("_sum") || name.ends_with("_count");
        let kind = if v0 == 0.0 || v0 == 1.0 || CONSTANT_HINTS.iter().any(|h| series.contains(h)) {
            Kind::Constant
        } else if monotonic {
            Kind::Counter
        } else {
            Kind::Gauge
        };
        let dec = decimals(text);
        let units0 = (v0 * 10f64.powi(dec as i32)).round() as i64;
        let mut units = units0;
        let start = 1_700_000_000_000 + (rng.next_u64() % 15_000) as i64;
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let t = start + i as i64 * 15_000 + (rng.next_u64() % 6) as i64;
            let v = match kind {
                Kind::Constant => v0,
                _ if name == "node_time_seconds" => t as f64 / 1000.0 + rng.uniform() * 1e-3,
                Kind::Counter => {
                    let mean = units0 as f64 * 15.0 / 250.0;
                    units += if mean < 1.0 {
                        i64::from(rng.uniform() < mean)
                    } else {
                        (mean * (0.5 + rng.uniform())).round() as i64
                    };
                    from_units(units, dec)
                }
                Kind::Gauge => {
                    let page = if name.ends_with("_bytes") && units0 % 4096 == 0 { 4096 } else { 1 };
                    let scale = if name.contains("duration") {
                        0.3
                    } else if name.contains("load") {
                        0.05
                    } else {
                        0.003
                    };
                    let sigma = (units0.abs() as f64 * scale / page as f64).max(1.0);
                    if units0.abs() >= 100 || rng.uniform() < 0.1 {
                        let pull = (units0 - units) as f64 * 0.05 / page as f64;
                        units += (pull + rng.normal() * sigma).round() as i64 * page;
                        if units0 >= 0 {
                            units = units.max(0);
                        }
                    }
                    from_units(units, dec)
                }
            };
            samples.push((t, v));
        }
        out.push((series.to_owned(), kind, samples));
    }
    out
}

#[test]
#[ignore = "report: run with --release -- --ignored --nocapture"]
fn chunkenc_report() {
    use std::hint::black_box;
    use std::time::Instant;

    const N: usize = 2880; // 12 h of 15 s scrapes
    let data = synthesize(&load_exposition(), N, 42);
    let mut by_kind: std::collections::BTreeMap<Kind, [usize; 7]> = Default::default();
    let mut encodings: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, kind, s) in &data {
        let e = by_kind.entry(*kind).or_default();
        e[0] += 1;
        e[1] += s.len();
        e[2] += xor_chunk(s).encoded_len();
        e[3] += s.chunks(120).map(|c| xor_chunk(c).encoded_len()).sum::<usize>();
        e[4] += s.chunks(120).map(|c| block(c).len()).sum::<usize>();
        e[5] += s.chunks(720).map(|c| block(c).len()).sum::<usize>();
        e[6] += block(s).len();
        for c in s.chunks(720) {
            let b = block(c);
            roundtrip(c);
            let venc = ["const", "decimal", "xor", "bits"][usize::from(value_encoding(&b))];
            let z = if b[0] & HEADER_COMPRESSED != 0 { "+zstd" } else { "" };
            *encodings.entry(format!("{kind:?}/{venc}{z}")).or_default() += 1;
        }
    }
    let mut total = [0usize; 7];
    println!("\nbytes/sample, {N} samples per series, 15 s scrapes with 0-5 ms jitter");
    println!(
        "{:<10} {:>7} {:>9} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "kind", "series", "samples", "xor(whole)", "xor(120)", "block(120)", "block(720)", "block(2880)"
    );
    for (kind, e) in &by_kind {
        for (t, x) in total.iter_mut().zip(e) {
            *t += x;
        }
        let per = |i: usize| e[i] as f64 / e[1] as f64;
        println!(
            "{:<10} {:>7} {:>9} {:>11.3} {:>11.3} {:>11.3} {:>11.3} {:>11.3}",
            format!("{kind:?}"),
            e[0],
            e[1],
            per(2),
            per(3),
            per(4),
            per(5),
            per(6)
        );
    }
    let per = |i: usize| total[i] as f64 / total[1] as f64;
    println!(
        "{:<10} {:>7} {:>9} {:>11.3} {:>11.3} {:>11.3} {:>11.3} {:>11.3}",
        "all",
        total[0],
        total[1],
        per(2),
        per(3),
        per(4),
        per(5),
        per(6)
    );
    println!("block(720) encodings: {encodings:?}");

    // Throughput.
    let rate = |samples: usize, secs: f64| samples as f64 / secs / 1e6;
    let n = 1_000_000usize;
    let mut rng = Rng(7);
    let counter: Vec<f64> = (0..n)
        .scan(0i64, |u, _| {
            *u += 1000 + (rng.next_u64() % 500) as i64;
            Some(*u as f64 / 100.0)
        })
        .collect();
    let random: Vec<f64> = (0..n).map(|_| f64::from_bits(rng.next_u64() >> 2)).collect();
    for (label, values) in [("constant", vec![42.0; n]), ("counter", counter), ("random bits", random)] {
        let mut best = f64::MAX;
        let mut chunk = XorChunk::new();
        for _ in 0..5 {
            let t0 = Instant::now();
            let mut c = XorChunk::new();
            for (i, &v) in values.iter().enumerate() {
                c.append(1_700_000_000_000 + i as i64 * 15_000, v);
            }
            best = best.min(t0.elapsed().as_secs_f64());
            chunk = black_box(c);
        }
        let t0 = Instant::now();
        let sum: f64 = chunk.iter().map(|s| s.1).sum();
        let iter_secs = t0.elapsed().as_secs_f64();
        black_box(sum);
        println!(
            "XorChunk {label:<12} append {:>7.1} M samples/s, iter {:>6.1} M samples/s, {:.3} bytes/sample",
            rate(n, best),
            rate(n, iter_secs),
            chunk.encoded_len() as f64 / n as f64
        );
    }

    let heads: Vec<XorChunk> = data.iter().map(|(_, _, s)| xor_chunk(&s[..120])).collect();
    let heap: usize = heads.iter().map(XorChunk::heap_bytes).sum();
    println!(
        "XorChunk memory: struct {} bytes + {:.1} heap bytes on average per 120-sample head chunk",
        std::mem::size_of::<XorChunk>(),
        heap as f64 / heads.len() as f64
    );

    let blocks: Vec<&[(i64, f64)]> = data.iter().flat_map(|(_, _, s)| s.chunks(720)).collect();
    let samples: usize = blocks.iter().map(|b| b.len()).sum();
    let mut encoded = Vec::new();
    let t0 = Instant::now();
    for b in &blocks {
        let mut out = Vec::new();
        encode_block(b, &mut out);
        encoded.push(out);
    }
    let enc_secs = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut decoded = 0usize;
    for e in &encoded {
        decoded += black_box(decode_block(e).expect("decode")).len();
    }
    let dec_secs = t0.elapsed().as_secs_f64();
    assert_eq!(decoded, samples);
    println!(
        "block(720) over the data set: encode {:.1} M samples/s, decode {:.1} M samples/s ({} blocks)",
        rate(samples, enc_secs),
        rate(samples, dec_secs),
        blocks.len()
    );
}
