//! Base-128 varints and zigzag, as protobuf writes them: shared by the WAL
//! records, the chunk codec and the remote-write decoder. Decoding is strict
//! (at most 10 bytes, no bits beyond 64) and never reads past the input.

/// Why a varint did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// More than 64 bits.
    Overlong,
}

/// Appends `x` as a uvarint.
#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// Maps signed to unsigned so that small magnitudes stay small.
#[inline]
pub fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

/// The inverse of [`zigzag`].
#[inline]
pub fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Reads a uvarint at `*pos`, advancing `*pos` past it on success.
#[inline]
pub fn read_uvarint(b: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    let mut x = 0u64;
    let mut p = *pos;
    for i in 0..10 {
        let Some(&byte) = b.get(p) else {
            return Err(VarintError::Truncated);
        };
        p += 1;
        if i == 9 && byte > 1 {
            return Err(VarintError::Overlong);
        }
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *pos = p;
            return Ok(x);
        }
    }
    Err(VarintError::Overlong)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_input() {
        for x in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            put_uvarint(&mut b, x);
            let mut pos = 0;
            assert_eq!(read_uvarint(&b, &mut pos), Ok(x));
            assert_eq!(pos, b.len());
            for cut in 0..b.len() {
                let mut pos = 0;
                assert_eq!(read_uvarint(&b[..cut], &mut pos), Err(VarintError::Truncated));
                assert_eq!(pos, 0);
            }
        }
        for x in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(x)), x);
        }
        assert_eq!(read_uvarint(&[0xff; 10], &mut 0), Err(VarintError::Overlong));
        assert_eq!(
            read_uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], &mut 0),
            Err(VarintError::Overlong)
        );
    }
}
