//! A bit reader for parameter sets (MSB first, exp-Golomb), with emulation prevention
//! bytes removed by the caller (`unescape_rbsp`).

use super::CodecError;

/// Removes H.264/HEVC emulation prevention bytes (`00 00 03` -> `00 00`).
pub fn unescape_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0usize;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Reads bits MSB first from a byte slice; every read past the end is an error.
pub struct BitReader<'a> {
    data: &'a [u8],
    pos_bits: usize,
    what: &'static str,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        Self {
            data,
            pos_bits: 0,
            what,
        }
    }

    pub fn read_bit(&mut self) -> Result<bool, CodecError> {
        let byte = self
            .data
            .get(self.pos_bits / 8)
            .ok_or(CodecError::Truncated { what: self.what })?;
        let bit = (byte >> (7 - (self.pos_bits % 8))) & 1;
        self.pos_bits += 1;
        Ok(bit == 1)
    }

    /// Reads `n` (≤ 64) bits as an unsigned number.
    pub fn read_bits(&mut self, n: u32) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.read_bit()?);
        }
        Ok(v)
    }

    pub fn skip_bits(&mut self, n: usize) -> Result<(), CodecError> {
        if self.pos_bits + n > self.data.len() * 8 {
            return Err(CodecError::Truncated { what: self.what });
        }
        self.pos_bits += n;
        Ok(())
    }

    /// Unsigned exp-Golomb, `ue(v)`; values past 32 bits are refused as invalid.
    pub fn read_ue(&mut self) -> Result<u32, CodecError> {
        let mut zeros = 0u32;
        while !self.read_bit()? {
            zeros += 1;
            if zeros > 31 {
                return Err(CodecError::Invalid {
                    what: self.what,
                    reason: "exp-Golomb code longer than 32 bits".into(),
                });
            }
        }
        let rest = self.read_bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + rest) as u32)
    }

    /// Signed exp-Golomb, `se(v)`.
    pub fn read_se(&mut self) -> Result<i32, CodecError> {
        let k = i64::from(self.read_ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) } as i32)
    }
}
