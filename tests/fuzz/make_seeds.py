#!/usr/bin/env python3
"""Writes the small seed corpus in seeds/ (run from tests/fuzz/).

Exposition seeds come from shared/ fixtures (../../../shared) and the
parser's unit-test examples; protobuf seeds are encoded here by hand (no
protobuf or snappy module needed). The first byte of every seed selects the
target's mode (see each fuzz target's doc comment).
"""
import os
import struct

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../shared")


def put(path, data):
    with open(path, "wb") as f:
        f.write(data)


def head(rel, n):
    with open(os.path.join(SHARED, rel), "rb") as f:
        return b"".join(f.readlines()[:n])


# --- exposition: b"0" = text 0.0.4, b"1" = OpenMetrics ---
put("seeds/exposition/node_exporter_head", b"0" + head("data/node_exporter.prom", 60))
put("seeds/exposition/fence_metrics_head", b"0" + head("gen3/fixtures/fence-metrics.prom", 40))
put("seeds/exposition/text_basics", b"0" + (
    b'# HELP http_requests_total The total number of HTTP requests.\n'
    b'# TYPE http_requests_total counter\n'
    b'http_requests_total{method="post",code="200"} 1027 1395066363000\n'
    b'http_requests_total{method="post",code="400",}    3 1395066363000\n'
    b'\n'
    b'# A normal comment.\n'
    b'msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9\n'
    b'something_weird{problem="division by zero"} +Inf -3982045\n'
    b'nan_metric NaN\n'
    b'# TYPE s summary\n'
    b's{quantile="0.5"} 4773\n'
    b's_sum 1.7560473e+07\n'
    b's_count 2693\n'))
put("seeds/exposition/openmetrics", b"1" + (
    b'# TYPE acme_http_router_request_seconds summary\n'
    b'# UNIT acme_http_router_request_seconds seconds\n'
    b'# HELP acme_http_router_request_seconds Latency though all of ACME\'s HTTP request router.\n'
    b'acme_http_router_request_seconds_sum{path="/api/v1",method="GET"} 9036.32\n'
    b'acme_http_router_request_seconds_count{path="/api/v1",method="GET"} 807283.0\n'
    b'# TYPE foo counter\n'
    b'foo_total 17.0 1520879607.789 # {id="counter-test"} 5\n'
    b'foo_created 1520872607.123\n'
    b'# TYPE h histogram\n'
    b'h_bucket{le="0.01"} 0\n'
    b'h_bucket{le="+Inf"} 17 # {trace_id="KOO5S4vxi0o"} 0.67 1520879602.4\n'
    b'h_count 17\n'
    b'h_sum 324789.3\n'
    b'# TYPE gh gaugehistogram\n'
    b'gh_bucket{le="+Inf"} 1\n'
    b'gh_gcount 1\n'
    b'gh_gsum 2\n'
    b'# TYPE b info\n'
    b'b_info{version="1.2"} 1\n'
    b'# TYPE ss stateset\n'
    b'ss{ss="a"} 1\n'
    b'# EOF\n'))


# --- protobuf by hand ---
def varint(x):
    x &= (1 << 64) - 1
    out = bytearray()
    while x >= 0x80:
        out.append((x & 0x7F) | 0x80)
        x >>= 7
    out.append(x)
    return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def ld(field, payload):
    return key(field, 2) + varint(len(payload)) + payload


def vint(field, x):
    return key(field, 0) + varint(x)


def dbl(field, v):
    return key(field, 1) + struct.pack("<d", v)


def label(name, value):
    return ld(1, name.encode()) + ld(2, value.encode())


def snappy_literal(raw):
    """Snappy block format with one literal (valid, uncompressed)."""
    n = len(raw) - 1
    if n < 60:
        tag = bytes([n << 2])
    elif n < 256:
        tag = bytes([60 << 2, n])
    else:
        tag = bytes([61 << 2]) + struct.pack("<H", n)
    return varint(len(raw)) + tag + raw


# prometheus.WriteRequest
def ts(labels, samples, exemplars=0, histograms=0):
    b = b"".join(ld(1, label(k, v)) for k, v in labels)
    b += b"".join(ld(2, dbl(1, v) + vint(2, t)) for t, v in samples)
    b += b"".join(ld(3, b"\x01\x02") for _ in range(exemplars))
    b += b"".join(ld(4, b"") for _ in range(histograms))
    return ld(1, b)


def metadata(typ, family, help_, unit):
    return ld(3, vint(1, typ) + ld(2, family.encode()) + ld(4, help_.encode()) + ld(5, unit.encode()))


wr = (ts([("__name__", "up"), ("job", "node"), ("instance", "a:9100")], [(1000, 1.0), (2000, 0.0)])
      + ts([("job", "node"), ("__name__", "node_load1")], [(1000, 0.5)], exemplars=1, histograms=1)
      + metadata(2, "node_load1", "1m load average.", ""))
put("seeds/remote_write/raw_request", b"\x00" + wr)
put("seeds/remote_write/snappy_request", b"\x01" + snappy_literal(wr))
put("seeds/remote_write/raw_utf8_labels", b"\x00" + ts([("__name__", "up"), ("é", "ü"), ("a", "")], [(-5, float("nan"))]))


# csoc.v1.AgentMessage frames, length-delimited
def packed(field, items):
    return ld(field, b"".join(items))


def series_def(ref, labels):
    return ld(2, vint(1, ref) + b"".join(ld(2, label(k, v)) for k, v in labels))


def batch(seq, defs, samples, md=b""):
    b = vint(1, seq) + b"".join(series_def(r, l) for r, l in defs)
    b += packed(3, [varint(r) for r, _, _ in samples])
    b += packed(4, [varint(t) for _, t, _ in samples])
    b += packed(5, [struct.pack("<d", v) for _, _, v in samples])
    return ld(2, b + md)


def frame(msg):
    return varint(len(msg)) + msg


hello = ld(1, ld(1, b"agent-1") + ld(2, b"0.1.0") + ld(3, b"host") + vint(6, 7))
md = ld(6, ld(1, b"up") + vint(2, 2) + ld(3, b"Up.") + ld(4, b""))
frames = (frame(hello)
          + frame(batch(1, [(1, [("__name__", "up"), ("job", "node")]), (2, [("__name__", "load1")])],
                        [(1, 1000, 1.0), (2, 1000, 0.25), (1, 2000, 0.0)], md))
          + frame(batch(2, [], [(1, 3000, 1.0), (2, 3000, 0.5)]))
          + frame(batch(2, [], [(1, 3000, 1.0)]))
          + frame(ld(3, vint(1, 1234))))
put("seeds/ingest_frames/stream", frames)
bad = (frame(batch(1, [(1, [("__name__", "up"), ("bad-name", "x")])], [(1, 1000, 1.0)]))
       + frame(batch(2, [], [(9, 1000, 1.0)]))
       + frame(batch(3, [(1, [("__name__", "up"), ("commons", "evil")])], [(1, 1000, 1.0), (1, 500, 2.0)])))
put("seeds/ingest_frames/rejects", bad)
# Regression seed: a series' first sample near i64::MIN, the next positive
# (overflowed the head's chunk-span check, collector/src/tsdb/head.rs).
put("seeds/ingest_frames/extreme_timestamps",
    frame(batch(1, [(1, [("__name__", "up")])], [(1, -(1 << 63) + 1, 1.0), (1, 1000, 2.0)])))
