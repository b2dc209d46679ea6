//! How one JSON value becomes one element of each datatype (or why it cannot). The datatypes
//! and typed buffers themselves are [`nacre_model::tensor`]'s: the parser fills exactly what
//! the model runs.

use half::f16;

pub use nacre_model::tensor::{ByteStrings, Datatype, DatatypeError, TensorData};

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
}
