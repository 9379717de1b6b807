//! Encoding of write-ahead-log records, apart from the log itself.
//!
//! One WAL row holds one record: the samples of one group commit, in the
//! order they were appended.
//!
//! ```text
//! record  := version:u8 (=1) count:uvarint sample*count
//! sample  := series_delta:varint(zigzag) t_delta:varint(zigzag) value:u64le
//! ```
//! `series_delta` is the series id minus the previous sample's (0 for the
//! first: minus 0); `t_delta` likewise for timestamps. Values are the f64's
//! bits, so NaN payloads (staleness markers) survive.

/// Record decoding errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The record ends early.
    #[error("wal record truncated at byte {0}")]
    Truncated(usize),
    /// Unknown version byte.
    #[error("wal record has unknown version {0}")]
    Version(u8),
    /// A varint is longer than 10 bytes.
    #[error("wal record has a malformed varint at byte {0}")]
    Varint(usize),
}

const VERSION: u8 = 1;

use crate::varint::{VarintError, put_uvarint, read_uvarint, unzigzag, zigzag};

/// Builds one record.
#[derive(Debug)]
pub struct RecordEncoder {
    buf: Vec<u8>,
    count: u64,
    prev_id: i64,
    prev_t: i64,
}

impl Default for RecordEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordEncoder {
    /// An empty record. The count is written at [`RecordEncoder::finish`].
    pub fn new() -> Self {
        RecordEncoder {
            buf: Vec::new(),
            count: 0,
            prev_id: 0,
            prev_t: 0,
        }
    }

    /// Adds a sample.
    pub fn push(&mut self, series_id: i64, t: i64, v: f64) {
        put_uvarint(&mut self.buf, zigzag(series_id.wrapping_sub(self.prev_id)));
        put_uvarint(&mut self.buf, zigzag(t.wrapping_sub(self.prev_t)));
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
        self.prev_id = series_id;
        self.prev_t = t;
        self.count += 1;
    }

    /// Samples pushed.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded record.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len() + 11);
        out.push(VERSION);
        put_uvarint(&mut out, self.count);
        out.extend_from_slice(&self.buf);
        out
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn uvarint(&mut self) -> Result<u64, RecordError> {
        read_uvarint(self.b, &mut self.pos).map_err(|e| match e {
            VarintError::Truncated => RecordError::Truncated(self.pos),
            VarintError::Overlong => RecordError::Varint(self.pos),
        })
    }
}

/// The sample count in a record's header (without decoding the samples).
pub fn count(b: &[u8]) -> Result<u64, RecordError> {
    let Some(&version) = b.first() else {
        return Err(RecordError::Truncated(0));
    };
    if version != VERSION {
        return Err(RecordError::Version(version));
    }
    Reader { b, pos: 1 }.uvarint()
}

/// Decodes a record, calling `f(series_id, t, v)` for each sample in order.
/// On error, the samples before the bad one have been passed to `f`.
pub fn decode(b: &[u8], mut f: impl FnMut(i64, i64, f64)) -> Result<u64, RecordError> {
    let Some(&version) = b.first() else {
        return Err(RecordError::Truncated(0));
    };
    if version != VERSION {
        return Err(RecordError::Version(version));
    }
    let mut r = Reader { b, pos: 1 };
    let count = r.uvarint()?;
    let (mut id, mut t) = (0i64, 0i64);
    for _ in 0..count {
        id = id.wrapping_add(unzigzag(r.uvarint()?));
        t = t.wrapping_add(unzigzag(r.uvarint()?));
        let end = r.pos + 8;
        let Some(bytes) = b.get(r.pos..end) else {
            return Err(RecordError::Truncated(r.pos));
        };
        let mut a = [0u8; 8];
        a.copy_from_slice(bytes);
        r.pos = end;
        f(id, t, f64::from_bits(u64::from_le_bytes(a)));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let samples = [
            (5i64, 1_700_000_000_000i64, 1.5f64),
            (3, 1_700_000_000_000, f64::from_bits(csoc_proto::STALE_NAN_BITS)),
            (900, -5, -0.0),
            (5, i64::MAX, f64::INFINITY),
        ];
        let mut e = RecordEncoder::new();
        for (id, t, v) in samples {
            e.push(id, t, v);
        }
        let b = e.finish();
        let mut out = Vec::new();
        assert_eq!(decode(&b, |id, t, v| out.push((id, t, v.to_bits()))), Ok(4));
        assert_eq!(count(&b), Ok(4));
        let want: Vec<_> = samples.iter().map(|(id, t, v)| (*id, *t, v.to_bits())).collect();
        assert_eq!(out, want);
        // Every truncation is an error, never a panic, and keeps the prefix.
        for cut in 0..b.len() {
            let mut n = 0;
            assert!(decode(&b[..cut], |_, _, _| n += 1).is_err(), "cut at {cut}");
            assert!(n < 4);
        }
        assert_eq!(decode(&[9], |_, _, _| {}), Err(RecordError::Version(9)));
        assert!(decode(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], |_, _, _| {}).is_err());
    }
}
