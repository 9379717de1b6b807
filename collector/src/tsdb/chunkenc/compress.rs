//! zstd framing of block payloads, with a cached compression and decompression
//! context per thread.

use std::cell::RefCell;

use super::{ByteOffset, ChunkError};

const ZSTD_LEVEL: i32 = 3;
/// Payloads shorter than this are not worth a zstd frame.
pub(super) const MIN_COMPRESS_LEN: usize = 24;

thread_local! {
    static ZSTD_COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static ZSTD_DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses with a per-thread context; `None` if zstd fails for any reason.
pub(super) fn zstd_compress(data: &[u8]) -> Option<Vec<u8>> {
    let with_cached = |cell: &RefCell<Option<zstd::bulk::Compressor<'static>>>| {
        let mut slot = cell.try_borrow_mut().ok()?;
        if slot.is_none() {
            let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()?;
            c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false)).ok()?;
            c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(false)).ok()?;
            *slot = Some(c);
        }
        slot.as_mut()?.compress(data).ok()
    };
    ZSTD_COMPRESSOR.try_with(with_cached).ok().flatten()
}

/// Decompresses a frame that must expand to exactly `raw_len` bytes.
pub(super) fn zstd_decompress(frame: &[u8], raw_len: usize, at: ByteOffset) -> Result<Vec<u8>, ChunkError> {
    let fresh = || zstd::bulk::Decompressor::new().and_then(|mut d| d.decompress(frame, raw_len));
    let result = ZSTD_DECOMPRESSOR
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut slot) => {
                if slot.is_none() {
                    *slot = zstd::bulk::Decompressor::new().ok();
                }
                match slot.as_mut() {
                    Some(d) => d.decompress(frame, raw_len),
                    None => fresh(),
                }
            }
            Err(_) => fresh(),
        })
        .unwrap_or_else(|_| fresh());
    let payload = result.map_err(|e| ChunkError::Decompress { at, reason: e.to_string() })?;
    if payload.len() != raw_len {
        return Err(ChunkError::Decompress {
            at,
            reason: format!("expanded to {} bytes, expected {raw_len}", payload.len()),
        });
    }
    Ok(payload)
}
