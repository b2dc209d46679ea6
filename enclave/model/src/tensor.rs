//! Tensors as they cross the serving boundary: a datatype of the Open Inference Protocol and
//! typed, row-major elements. No tract type appears here, so the serving layer parses into
//! these and [`crate::Model::run`] hands them to tract without the server knowing tract.

use half::f16;

/// A datatype of the Open Inference Protocol that tract runs. BF16 is named by the protocol
/// but tract has no such type ([`Datatype::parse`] refuses it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Datatype {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    /// Strings: ONNX's STRING, tract's `String` (UTF-8).
    Bytes,
}

/// Why a datatype name is not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatatypeError {
    /// A datatype of the protocol that tract does not run (BF16).
    Unsupported(&'static str),
    /// Not a datatype of the protocol.
    Unknown,
}

impl Datatype {
    pub const ALL: [Datatype; 13] = [
        Datatype::Bool,
        Datatype::Uint8,
        Datatype::Uint16,
        Datatype::Uint32,
        Datatype::Uint64,
        Datatype::Int8,
        Datatype::Int16,
        Datatype::Int32,
        Datatype::Int64,
        Datatype::Fp16,
        Datatype::Fp32,
        Datatype::Fp64,
        Datatype::Bytes,
    ];

    /// The protocol's name (`FP32`, …).
    pub fn name(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp16 => "FP16",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
        }
    }

    /// Triton's model-configuration name (`TYPE_FP32`, `TYPE_STRING` for BYTES).
    pub fn config_name(self) -> &'static str {
        match self {
            Datatype::Bool => "TYPE_BOOL",
            Datatype::Uint8 => "TYPE_UINT8",
            Datatype::Uint16 => "TYPE_UINT16",
            Datatype::Uint32 => "TYPE_UINT32",
            Datatype::Uint64 => "TYPE_UINT64",
            Datatype::Int8 => "TYPE_INT8",
            Datatype::Int16 => "TYPE_INT16",
            Datatype::Int32 => "TYPE_INT32",
            Datatype::Int64 => "TYPE_INT64",
            Datatype::Fp16 => "TYPE_FP16",
            Datatype::Fp32 => "TYPE_FP32",
            Datatype::Fp64 => "TYPE_FP64",
            Datatype::Bytes => "TYPE_STRING",
        }
    }

    /// Exact names only, as the protocol spells them.
    pub fn parse(name: &str) -> Result<Self, DatatypeError> {
        if name == "BF16" {
            return Err(DatatypeError::Unsupported("BF16"));
        }
        Self::ALL.into_iter().find(|d| d.name() == name).ok_or(DatatypeError::Unknown)
    }

    /// Bytes one element takes on the wire (the binary tensor extension, gRPC raw contents)
    /// and in memory; BYTES: its 4-byte length prefix (the string's own bytes come on top).
    pub fn element_size(self) -> usize {
        match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => 1,
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 => 2,
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 | Datatype::Bytes => 4,
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => 8,
        }
    }
}

/// A tensor's elements, row-major, of one datatype.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(ByteStrings),
}

/// Applies `$f` to the typed vector inside a fixed-size variant, `$bytes` to BYTES.
macro_rules! each {
    ($data:expr, $v:ident => $f:expr, $s:ident => $bytes:expr) => {
        match $data {
            TensorData::Bool($v) => $f,
            TensorData::Uint8($v) => $f,
            TensorData::Uint16($v) => $f,
            TensorData::Uint32($v) => $f,
            TensorData::Uint64($v) => $f,
            TensorData::Int8($v) => $f,
            TensorData::Int16($v) => $f,
            TensorData::Int32($v) => $f,
            TensorData::Int64($v) => $f,
            TensorData::Fp16($v) => $f,
            TensorData::Fp32($v) => $f,
            TensorData::Fp64($v) => $f,
            TensorData::Bytes($s) => $bytes,
        }
    };
}
pub(crate) use each;

impl TensorData {
    /// No elements, of datatype `d`.
    pub fn empty(d: Datatype) -> Self {
        match d {
            Datatype::Bool => TensorData::Bool(Vec::new()),
            Datatype::Uint8 => TensorData::Uint8(Vec::new()),
            Datatype::Uint16 => TensorData::Uint16(Vec::new()),
            Datatype::Uint32 => TensorData::Uint32(Vec::new()),
            Datatype::Uint64 => TensorData::Uint64(Vec::new()),
            Datatype::Int8 => TensorData::Int8(Vec::new()),
            Datatype::Int16 => TensorData::Int16(Vec::new()),
            Datatype::Int32 => TensorData::Int32(Vec::new()),
            Datatype::Int64 => TensorData::Int64(Vec::new()),
            Datatype::Fp16 => TensorData::Fp16(Vec::new()),
            Datatype::Fp32 => TensorData::Fp32(Vec::new()),
            Datatype::Fp64 => TensorData::Fp64(Vec::new()),
            Datatype::Bytes => TensorData::Bytes(ByteStrings::default()),
        }
    }

    pub fn datatype(&self) -> Datatype {
        match self {
            TensorData::Bool(_) => Datatype::Bool,
            TensorData::Uint8(_) => Datatype::Uint8,
            TensorData::Uint16(_) => Datatype::Uint16,
            TensorData::Uint32(_) => Datatype::Uint32,
            TensorData::Uint64(_) => Datatype::Uint64,
            TensorData::Int8(_) => Datatype::Int8,
            TensorData::Int16(_) => Datatype::Int16,
            TensorData::Int32(_) => Datatype::Int32,
            TensorData::Int64(_) => Datatype::Int64,
            TensorData::Fp16(_) => Datatype::Fp16,
            TensorData::Fp32(_) => Datatype::Fp32,
            TensorData::Fp64(_) => Datatype::Fp64,
            TensorData::Bytes(_) => Datatype::Bytes,
        }
    }

    /// The element count.
    pub fn len(&self) -> usize {
        each!(self, v => v.len(), s => s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the elements take in the binary encoding ([`Self::write_le`]).
    pub fn wire_len(&self) -> usize {
        match self {
            TensorData::Bytes(s) => s.bytes.len() + 4 * s.len(),
            other => other.len() * other.datatype().element_size(),
        }
    }

    /// The binary encoding of the binary tensor extension and of gRPC's raw contents:
    /// little-endian elements back to back; BOOL one byte (0 or 1); each BYTES element a u32
    /// little-endian length, then its bytes.
    pub fn write_le(&self, out: &mut Vec<u8>) {
        out.reserve(self.wire_len());
        match self {
            TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
            TensorData::Uint8(v) => out.extend_from_slice(v),
            TensorData::Uint16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Uint32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Uint64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Int8(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Int16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Int32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Int64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Fp16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Fp32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Fp64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Bytes(s) => {
                for e in s.iter() {
                    // Each element is at most 4 GiB: `ByteStrings` offsets are u32.
                    out.extend_from_slice(&(e.len() as u32).to_le_bytes());
                    out.extend_from_slice(e);
                }
            }
        }
    }
}

/// BYTES elements in one buffer: the strings back to back and where each ends (4 bytes per
/// element rather than a `Vec` header of 24, which an input of many short strings would
/// otherwise multiply).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByteStrings {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl ByteStrings {
    /// The strings `bytes` holds, element `i` ending at `ends[i]`. None unless the ends are
    /// non-decreasing and within `bytes`.
    pub fn from_parts(bytes: Vec<u8>, ends: Vec<u32>) -> Option<Self> {
        let ordered = ends.windows(2).all(|w| w[0] <= w[1]);
        let within = ends.last().is_none_or(|&e| e as usize <= bytes.len());
        (ordered && within).then_some(ByteStrings { bytes, ends })
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)? as usize;
        let start = match index {
            0 => 0,
            i => self.ends[i - 1] as usize,
        };
        self.bytes.get(start..end)
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        // `from_parts` checked the ends: every index has its string.
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// All the strings' bytes, back to back.
    pub fn total_bytes(&self) -> usize {
        self.bytes.len()
    }
}

impl FromIterator<String> for ByteStrings {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        let mut out = ByteStrings::default();
        for s in iter {
            out.bytes.extend_from_slice(s.as_bytes());
            out.ends.push(out.bytes.len() as u32);
        }
        out
    }
}

/// A tensor: its shape and its elements (as many as the shape's product).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl ByteStrings {
    fn append(&mut self, other: &ByteStrings) {
        let base = self.bytes.len() as u32;
        self.bytes.extend_from_slice(&other.bytes);
        self.ends.extend(other.ends.iter().map(|e| e + base));
    }

    /// The strings from `at` on, removed from `self`.
    fn split_off(&mut self, at: usize) -> ByteStrings {
        let cut = match at {
            0 => 0,
            i => self.ends[i - 1],
        };
        let bytes = self.bytes.split_off(cut as usize);
        let ends = self.ends.split_off(at).into_iter().map(|e| e - cut).collect();
        ByteStrings { bytes, ends }
    }
}

impl Tensor {
    /// The elements of one row (one index of the first dimension); `None` for a scalar.
    fn row_len(&self) -> Option<usize> {
        (!self.shape.is_empty()).then(|| self.shape[1..].iter().product())
    }

    /// Whether `self` and `other` can be stacked along the first dimension: the same datatype
    /// and the same shape past it.
    pub fn stacks_with(&self, other: &Tensor) -> bool {
        !self.shape.is_empty()
            && self.shape.len() == other.shape.len()
            && self.shape[1..] == other.shape[1..]
            && self.data.datatype() == other.data.datatype()
    }

    /// `tensors` stacked along the first dimension (dynamic batching merges requests this
    /// way); `None` unless every one [`Self::stacks_with`] the first.
    pub fn concat_rows(tensors: Vec<Tensor>) -> Option<Tensor> {
        let mut it = tensors.into_iter();
        let mut out = it.next()?;
        for t in it {
            if !out.stacks_with(&t) {
                return None;
            }
            out.shape[0] += t.shape[0];
            match (&mut out.data, t.data) {
                (TensorData::Bytes(a), TensorData::Bytes(b)) => a.append(&b),
                (a, b) => {
                    macro_rules! extend {
                        ($($v:ident),*) => {
                            match (a, b) {
                                $((TensorData::$v(x), TensorData::$v(y)) => x.extend(y),)*
                                _ => return None,
                            }
                        };
                    }
                    extend!(Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64);
                }
            }
        }
        Some(out)
    }

    /// `self` cut along the first dimension into pieces of `rows` rows each (the inverse of
    /// [`Self::concat_rows`]); `None` unless `rows` adds up to the first dimension and the
    /// elements match the shape.
    pub fn split_rows(mut self, rows: &[usize]) -> Option<Vec<Tensor>> {
        let row_len = self.row_len()?;
        if rows.iter().sum::<usize>() != self.shape[0] || self.data.len() != self.shape[0] * row_len {
            return None;
        }
        let mut pieces = Vec::with_capacity(rows.len());
        // From the back, so that each split_off moves only the piece it returns.
        for &n in rows.iter().rev() {
            let at = (self.shape[0] - n) * row_len;
            let data = match &mut self.data {
                TensorData::Bytes(s) => TensorData::Bytes(s.split_off(at)),
                other => {
                    macro_rules! split {
                        ($($v:ident),*) => {
                            match other {
                                $(TensorData::$v(x) => TensorData::$v(x.split_off(at)),)*
                                TensorData::Bytes(_) => return None,
                            }
                        };
                    }
                    split!(Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64)
                }
            };
            self.shape[0] -= n;
            let mut shape = self.shape.clone();
            shape[0] = n;
            pieces.push(Tensor { shape, data });
        }
        pieces.reverse();
        Some(pieces)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip_and_bf16_is_refused() {
        for d in Datatype::ALL {
            assert_eq!(Datatype::parse(d.name()), Ok(d));
            assert!(d.config_name().starts_with("TYPE_"));
        }
        assert_eq!(Datatype::parse("BF16"), Err(DatatypeError::Unsupported("BF16")));
        assert_eq!(Datatype::parse("fp32"), Err(DatatypeError::Unknown));
        assert_eq!(Datatype::parse("FLOAT"), Err(DatatypeError::Unknown));
    }

    #[test]
    fn byte_strings_index_and_check_their_ends() {
        let s = ByteStrings::from_parts(b"abcde".to_vec(), vec![2, 2, 5]).unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![&b"ab"[..], b"", b"cde"]);
        assert_eq!(s.get(3), None);
        assert_eq!(ByteStrings::from_parts(b"abc".to_vec(), vec![2, 1]), None, "decreasing");
        assert_eq!(ByteStrings::from_parts(b"abc".to_vec(), vec![4]), None, "past the bytes");
    }

    #[test]
    fn binary_encoding_is_little_endian_with_length_prefixed_strings() {
        let mut out = Vec::new();
        TensorData::Int16(vec![1, -2]).write_le(&mut out);
        assert_eq!(out, [1, 0, 0xfe, 0xff]);
        out.clear();
        TensorData::Bool(vec![true, false]).write_le(&mut out);
        assert_eq!(out, [1, 0]);
        out.clear();
        let s: ByteStrings = ["hi".to_owned(), String::new()].into_iter().collect();
        let data = TensorData::Bytes(s);
        data.write_le(&mut out);
        assert_eq!(out, [2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0]);
        assert_eq!(data.wire_len(), out.len());
        out.clear();
        TensorData::Fp16(vec![f16::from_f32(1.0)]).write_le(&mut out);
        assert_eq!(out, [0x00, 0x3c]);
    }

    #[test]
    fn rows_stack_and_split_back() {
        let a = Tensor { shape: vec![1, 2], data: TensorData::Fp32(vec![1.0, 2.0]) };
        let b = Tensor { shape: vec![2, 2], data: TensorData::Fp32(vec![3.0, 4.0, 5.0, 6.0]) };
        let ab = Tensor::concat_rows(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(ab.shape, vec![3, 2]);
        assert_eq!(ab.data, TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        assert_eq!(ab.clone().split_rows(&[1, 2]).unwrap(), vec![a.clone(), b]);
        assert!(ab.clone().split_rows(&[1, 1]).is_none(), "rows must add up");
        let other = Tensor { shape: vec![1, 3], data: TensorData::Fp32(vec![0.0; 3]) };
        assert!(Tensor::concat_rows(vec![a.clone(), other]).is_none(), "shapes past the first differ");
        let ints = Tensor { shape: vec![1, 2], data: TensorData::Int32(vec![1, 2]) };
        assert!(Tensor::concat_rows(vec![a, ints]).is_none(), "datatypes differ");
        let s = |v: &[&str]| TensorData::Bytes(v.iter().map(|s| (*s).to_owned()).collect());
        let x = Tensor { shape: vec![2], data: s(&["ab", ""]) };
        let y = Tensor { shape: vec![1], data: s(&["cde"]) };
        let xy = Tensor::concat_rows(vec![x.clone(), y.clone()]).unwrap();
        assert_eq!(xy.data, s(&["ab", "", "cde"]));
        assert_eq!(xy.split_rows(&[2, 1]).unwrap(), vec![x, y]);
    }
}
