//! TEMPORARY stand-in for the chunk encodings (being written separately):
//! raw little-endian samples. Same API as the real module.

/// Chunk decoding errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// Input too short or inconsistent.
    #[error("corrupt chunk: {0}")]
    Corrupt(String),
}

/// Head chunk.
#[derive(Debug, Clone, Default)]
pub struct XorChunk {
    s: Vec<(i64, f64)>,
}

impl XorChunk {
    /// Empty chunk.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends (t strictly increasing).
    pub fn append(&mut self, t: i64, v: f64) {
        self.s.push((t, v));
    }
    /// Samples.
    pub fn len(&self) -> usize {
        self.s.len()
    }
    /// No samples.
    pub fn is_empty(&self) -> bool {
        self.s.is_empty()
    }
    /// First t.
    pub fn min_time(&self) -> Option<i64> {
        self.s.first().map(|s| s.0)
    }
    /// Last t.
    pub fn max_time(&self) -> Option<i64> {
        self.s.last().map(|s| s.0)
    }
    /// Iterates.
    pub fn iter(&self) -> impl Iterator<Item = (i64, f64)> + '_ {
        self.s.iter().copied()
    }
    /// Heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.s.capacity() * 16
    }
}

/// Encodes a block.
pub fn encode_block(samples: &[(i64, f64)], out: &mut Vec<u8>) {
    for (t, v) in samples {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
}

/// Decodes a block.
pub fn decode_block(b: &[u8]) -> Result<Vec<(i64, f64)>, ChunkError> {
    if !b.len().is_multiple_of(16) {
        return Err(ChunkError::Corrupt(format!("length {}", b.len())));
    }
    Ok(b.chunks_exact(16)
        .map(|c| {
            let mut t = [0u8; 8];
            let mut v = [0u8; 8];
            t.copy_from_slice(&c[..8]);
            v.copy_from_slice(&c[8..]);
            (i64::from_le_bytes(t), f64::from_bits(u64::from_le_bytes(v)))
        })
        .collect())
}
