//! Tensor datatypes of the Open Inference Protocol, typed tensor buffers, and how one JSON
//! value becomes one element of each datatype (or why it cannot).

use half::f16;

/// A datatype of the Open Inference Protocol. BF16 is named by the protocol but not
/// supported here ([`Datatype::parse`] refuses it).
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
    Bytes,
}

/// Why a datatype name is not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatatypeError {
    /// A datatype of the protocol that this server does not take (BF16).
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

    /// Exact names only, as the protocol spells them.
    pub fn parse(name: &str) -> Result<Self, DatatypeError> {
        if name == "BF16" {
            return Err(DatatypeError::Unsupported("BF16"));
        }
        Self::ALL.into_iter().find(|d| d.name() == name).ok_or(DatatypeError::Unknown)
    }

    /// Bytes one element takes in memory; for BYTES its end offset in [`ByteStrings`] (the
    /// string's own bytes are counted as they are read).
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

impl TensorData {
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
        match self {
            TensorData::Bool(v) => v.len(),
            TensorData::Uint8(v) => v.len(),
            TensorData::Uint16(v) => v.len(),
            TensorData::Uint32(v) => v.len(),
            TensorData::Uint64(v) => v.len(),
            TensorData::Int8(v) => v.len(),
            TensorData::Int16(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Fp16(v) => v.len(),
            TensorData::Fp32(v) => v.len(),
            TensorData::Fp64(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }
}

/// BYTES elements in one buffer: the strings back to back and where each ends (4 bytes per
/// element rather than a `Vec` header of 24, which an input of many short strings would
/// otherwise multiply).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByteStrings {
    pub(super) bytes: Vec<u8>,
    pub(super) ends: Vec<u32>,
}

#[allow(dead_code, reason = "BYTES inputs are parsed, not yet served (issue 15)")]
impl ByteStrings {
    pub fn len(&self) -> usize {
        self.ends.len()
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
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// Why a BOOL element is refused.
pub(super) const NOT_BOOL: &str = "not a boolean (true or false)";
/// Why an element of a numeric datatype is refused when it is not a number.
pub(super) const NOT_NUMBER: &str = "not a number";
/// Why an element of an integer datatype is refused when it has a fraction or an exponent.
const NOT_INTEGER: &str = "not an integer";
/// Why a BYTES element is refused when it is not a string.
pub(super) const NOT_STRING: &str = "not a string";

/// One element of a fixed-size datatype, made from one JSON scalar. Each conversion returns
/// why the value is refused, for the error that names the element.
pub(super) trait Scalar: Copy {
    /// Why a JSON value of the wrong kind (a string for a number, …) is refused.
    const WRONG_KIND: &'static str;
    fn from_bool(_: bool) -> Result<Self, &'static str> {
        Err(Self::WRONG_KIND)
    }
    fn from_u64(_: u64, _allow_non_finite: bool) -> Result<Self, &'static str> {
        Err(Self::WRONG_KIND)
    }
    fn from_i64(_: i64, _allow_non_finite: bool) -> Result<Self, &'static str> {
        Err(Self::WRONG_KIND)
    }
    fn from_f64(_: f64, _allow_non_finite: bool) -> Result<Self, &'static str> {
        Err(Self::WRONG_KIND)
    }
    fn wrap(data: Vec<Self>) -> TensorData;
}

impl Scalar for bool {
    const WRONG_KIND: &'static str = NOT_BOOL;
    fn from_bool(v: bool) -> Result<Self, &'static str> {
        Ok(v)
    }
    fn wrap(data: Vec<Self>) -> TensorData {
        TensorData::Bool(data)
    }
}

/// An integral JSON number too large for u64/i64 reaches the visitor as a float: out of
/// range, not "not an integer".
fn float_for_integer(v: f64, out_of_range: &'static str) -> &'static str {
    const TWO_TO_64: f64 = 18_446_744_073_709_551_616.0;
    const MINUS_TWO_TO_63: f64 = -9_223_372_036_854_775_808.0;
    // -2^63 itself arrives as an i64: a float equal to it is a rounded integer below it.
    if v.trunc() == v && (v >= TWO_TO_64 || v <= MINUS_TWO_TO_63) { out_of_range } else { NOT_INTEGER }
}

macro_rules! integer {
    ($t:ty, $variant:ident, $out_of_range:literal) => {
        impl Scalar for $t {
            const WRONG_KIND: &'static str = NOT_NUMBER;
            fn from_u64(v: u64, _: bool) -> Result<Self, &'static str> {
                <$t>::try_from(v).map_err(|_| $out_of_range)
            }
            fn from_i64(v: i64, _: bool) -> Result<Self, &'static str> {
                <$t>::try_from(v).map_err(|_| $out_of_range)
            }
            fn from_f64(v: f64, _: bool) -> Result<Self, &'static str> {
                Err(float_for_integer(v, $out_of_range))
            }
            fn wrap(data: Vec<Self>) -> TensorData {
                TensorData::$variant(data)
            }
        }
    };
}

integer!(u8, Uint8, "out of range for UINT8");
integer!(u16, Uint16, "out of range for UINT16");
integer!(u32, Uint32, "out of range for UINT32");
integer!(u64, Uint64, "out of range for UINT64");
integer!(i8, Int8, "out of range for INT8");
integer!(i16, Int16, "out of range for INT16");
integer!(i32, Int32, "out of range for INT32");
integer!(i64, Int64, "out of range for INT64");

// JSON has no NaN or infinity: a non-finite float here is a finite number beyond the
// datatype's range, refused unless the configuration allows non-finite inputs.

impl Scalar for f16 {
    const WRONG_KIND: &'static str = NOT_NUMBER;
    fn from_u64(v: u64, allow_non_finite: bool) -> Result<Self, &'static str> {
        <f16 as Scalar>::from_f64(v as f64, allow_non_finite)
    }
    fn from_i64(v: i64, allow_non_finite: bool) -> Result<Self, &'static str> {
        <f16 as Scalar>::from_f64(v as f64, allow_non_finite)
    }
    fn from_f64(v: f64, allow_non_finite: bool) -> Result<Self, &'static str> {
        let x = f16::from_f64(v);
        if x.is_finite() || allow_non_finite {
            Ok(x)
        } else {
            Err("not finite (NaN, ±inf or out of FP16 range)")
        }
    }
    fn wrap(data: Vec<Self>) -> TensorData {
        TensorData::Fp16(data)
    }
}

impl Scalar for f32 {
    const WRONG_KIND: &'static str = NOT_NUMBER;
    fn from_u64(v: u64, _: bool) -> Result<Self, &'static str> {
        Ok(v as f32)
    }
    fn from_i64(v: i64, _: bool) -> Result<Self, &'static str> {
        Ok(v as f32)
    }
    fn from_f64(v: f64, allow_non_finite: bool) -> Result<Self, &'static str> {
        let x = v as f32;
        if x.is_finite() || allow_non_finite {
            Ok(x)
        } else {
            Err("not finite (NaN, ±inf or out of FP32 range)")
        }
    }
    fn wrap(data: Vec<Self>) -> TensorData {
        TensorData::Fp32(data)
    }
}

impl Scalar for f64 {
    const WRONG_KIND: &'static str = NOT_NUMBER;
    fn from_u64(v: u64, _: bool) -> Result<Self, &'static str> {
        Ok(v as f64)
    }
    fn from_i64(v: i64, _: bool) -> Result<Self, &'static str> {
        Ok(v as f64)
    }
    // serde_json refuses numbers beyond f64's range itself.
    fn from_f64(v: f64, _: bool) -> Result<Self, &'static str> {
        Ok(v)
    }
    fn wrap(data: Vec<Self>) -> TensorData {
        TensorData::Fp64(data)
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
        }
        assert_eq!(Datatype::parse("BF16"), Err(DatatypeError::Unsupported("BF16")));
        assert_eq!(Datatype::parse("fp32"), Err(DatatypeError::Unknown));
        assert_eq!(Datatype::parse("FLOAT"), Err(DatatypeError::Unknown));
    }

    #[test]
    fn integers_from_floats() {
        assert_eq!(u8::from_f64(1.5, false), Err(NOT_INTEGER));
        assert_eq!(u8::from_f64(2.0, false), Err(NOT_INTEGER), "written with a fraction");
        assert_eq!(i64::from_f64(1e19, false), Err(NOT_INTEGER), "written as a float");
        assert_eq!(i64::from_f64(-9_223_372_036_854_775_808.0, false), Err("out of range for INT64"));
        assert_eq!(u64::from_f64(1e20, false), Err("out of range for UINT64"));
        assert_eq!(i8::from_i64(-129, false), Err("out of range for INT8"));
        assert_eq!(u64::from_i64(-1, false), Err("out of range for UINT64"));
        assert_eq!(u64::from_u64(u64::MAX, false), Ok(u64::MAX));
    }

    #[test]
    fn byte_strings_index() {
        let s = ByteStrings { bytes: b"abcde".to_vec(), ends: vec![2, 2, 5] };
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![&b"ab"[..], b"", b"cde"]);
        assert_eq!(s.get(3), None);
    }
}
