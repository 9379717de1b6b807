//! Byte-aligned fields: varint helpers and a reader that reports where it failed.

use super::{ByteOffset, ChunkError};
use crate::varint::{VarintError, put_uvarint, read_uvarint, unzigzag, zigzag};

#[inline]
pub(super) fn put_varint(out: &mut Vec<u8>, x: i64) {
    put_uvarint(out, zigzag(x));
}

pub(super) fn uvarint_len(x: u64) -> usize {
    (64 - (x | 1).leading_zeros() as usize).div_ceil(7)
}

/// Which offsets a reader reports: into the input or into a decompressed payload.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    base: usize,
    in_payload: bool,
}

impl Origin {
    pub(super) const INPUT: Origin = Origin {
        base: 0,
        in_payload: false,
    };
    pub(super) const PAYLOAD: Origin = Origin { base: 0, in_payload: true };

    pub(super) fn at(self, offset: usize) -> ByteOffset {
        let n = self.base.saturating_add(offset);
        if self.in_payload {
            ByteOffset::Payload(n)
        } else {
            ByteOffset::Input(n)
        }
    }

    pub(super) fn shifted(self, by: usize) -> Origin {
        Origin {
            base: self.base.saturating_add(by),
            in_payload: self.in_payload,
        }
    }
}

/// Reads byte-aligned fields.
pub(super) struct ByteReader<'a> {
    data: &'a [u8],
    pub(super) pos: usize,
    pub(super) origin: Origin,
}

impl<'a> ByteReader<'a> {
    pub(super) fn new(data: &'a [u8], origin: Origin) -> Self {
        ByteReader { data, pos: 0, origin }
    }

    pub(super) fn at(&self) -> ByteOffset {
        self.origin.at(self.pos)
    }

    pub(super) fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or(&[])
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, ChunkError> {
        let b = *self.data.get(self.pos).ok_or(ChunkError::Truncated { what, at: self.at() })?;
        self.pos += 1;
        Ok(b)
    }

    pub(super) fn u64_be(&mut self, what: &'static str) -> Result<u64, ChunkError> {
        let bytes = self
            .rest()
            .first_chunk::<8>()
            .ok_or(ChunkError::Truncated { what, at: self.at() })?;
        self.pos += 8;
        Ok(u64::from_be_bytes(*bytes))
    }

    pub(super) fn take(&mut self, len: u64, what: &'static str) -> Result<&'a [u8], ChunkError> {
        let rest = self.rest();
        match usize::try_from(len) {
            Ok(len) if len <= rest.len() => {
                self.pos += len;
                Ok(&rest[..len])
            }
            _ => Err(ChunkError::Truncated { what, at: self.at() }),
        }
    }

    pub(super) fn skip(&mut self, len: usize) {
        self.pos = self.pos.saturating_add(len).min(self.data.len());
    }

    #[inline]
    pub(super) fn uvarint(&mut self, what: &'static str) -> Result<u64, ChunkError> {
        let start = self.pos;
        read_uvarint(self.data, &mut self.pos).map_err(|e| match e {
            VarintError::Truncated => ChunkError::Truncated {
                what,
                at: self.origin.at(start),
            },
            VarintError::Overlong => ChunkError::Invalid {
                what: "varint (longer than 64 bits)",
                at: self.origin.at(start),
            },
        })
    }

    #[inline]
    pub(super) fn varint(&mut self, what: &'static str) -> Result<i64, ChunkError> {
        self.uvarint(what).map(unzigzag)
    }

    /// Accepts only zero bytes from the current position to the end.
    pub(super) fn expect_padding(&self) -> Result<(), ChunkError> {
        match self.rest().iter().position(|&b| b != 0) {
            None => Ok(()),
            Some(i) => Err(ChunkError::TrailingBytes {
                at: self.origin.at(self.pos + i),
            }),
        }
    }
}
