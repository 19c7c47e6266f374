//! Reading an input's values, JSON or binary alike: the typed accessors codecs use.

use std::borrow::Cow;

use serde_json::Value;

use super::decode::{BytesElements, check_binary, cut_short};
use super::{
    Datatype, InputData, InputTensor, Malformed, describe_count, element_count, malformed,
};

/// The number of values in JSON `data`: its leaves, however nested.
fn json_count(value: &Value) -> u64 {
    match value {
        Value::Array(items) => items.iter().map(json_count).sum(),
        _ => 1,
    }
}

fn not_utf8(name: &str, index: usize) -> Malformed {
    Malformed(format!(
        "input `{name}`: data[{index}] is not UTF-8; BYTES elements read as text must be UTF-8"
    ))
}

/// Little-endian bytes as values (`bytes` holds a whole number of them: checked when the
/// request was decoded).
fn from_le<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    let mut values: Vec<T> = bytemuck::pod_collect_to_vec(bytes);
    if cfg!(target_endian = "big") {
        bytemuck::cast_slice_mut::<T, u8>(&mut values)
            .chunks_exact_mut(size_of::<T>())
            .for_each(<[u8]>::reverse);
    }
    values
}

fn half_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let magnitude = match (exponent, mantissa) {
        (0, 0) => 0.0,
        // Subnormal: mantissa × 2^-24.
        (0, m) => m as f32 * f32::from_bits(0x3380_0000),
        (0x1f, 0) => f32::INFINITY,
        (0x1f, _) => f32::NAN,
        (e, m) => f32::from_bits(((e + 127 - 15) << 23) | (m << 13)),
    };
    f32::from_bits(sign | magnitude.to_bits())
}

/// A float as a JSON value; JSON holds no NaN or infinity.
fn float_value(name: &str, index: usize, x: f64) -> Result<Value, Malformed> {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .ok_or_else(|| {
            Malformed(format!(
                "input `{name}`: data[{index}] is {x}, not a finite number"
            ))
        })
}

impl InputTensor {
    fn datatype(&self) -> Option<Datatype> {
        Datatype::parse(&self.datatype)
    }

    /// How many values the tensor holds: the data actually present, which agrees with the
    /// shape (checked here too, for tensors not made by [`decode_request`]).
    pub(crate) fn value_count(&self) -> Result<usize, Malformed> {
        let found = match &self.data {
            InputData::Json(values) => json_count(values),
            InputData::Binary(bytes) => {
                check_binary(&self.name, &self.datatype, &self.shape, bytes)?;
                element_count(&self.shape).unwrap_or(0)
            }
        };
        let expected = element_count(&self.shape);
        if expected != Some(found) {
            return malformed(format!(
                "input `{}` has shape {:?}, which holds {} values, but `data` has {found}; send \
                 a shape and data that agree (data is row-major, flat or nested)",
                self.name,
                self.shape,
                describe_count(expected)
            ));
        }
        usize::try_from(found).map_err(|_| Malformed(format!("input `{}` is too large", self.name)))
    }

    /// Calls `f` with each value, row-major, as a JSON value (binary data converted: BOOL
    /// as a boolean, integers and floats as numbers, BYTES as a string when UTF-8).
    pub(crate) fn for_each_value<E: From<Malformed>>(
        &self,
        mut f: impl FnMut(usize, &Value) -> Result<(), E>,
    ) -> Result<(), E> {
        fn walk<E>(
            value: &Value,
            index: &mut usize,
            f: &mut impl FnMut(usize, &Value) -> Result<(), E>,
        ) -> Result<(), E> {
            match value {
                Value::Array(items) => items.iter().try_for_each(|v| walk(v, index, f)),
                other => {
                    f(*index, other)?;
                    *index += 1;
                    Ok(())
                }
            }
        }
        self.value_count()?;
        let bytes = match &self.data {
            InputData::Json(values) => return walk(values, &mut 0, &mut f),
            InputData::Binary(bytes) => bytes,
        };
        let name = &self.name;
        let Some(datatype) = self.datatype() else {
            return Err(Malformed(format!("input `{name}` has an unknown datatype")).into());
        };
        let mut emit = |i: usize, v: Result<Value, Malformed>| f(i, &v?);
        match datatype {
            Datatype::Bool => {
                (bytes.iter().enumerate()).try_for_each(|(i, b)| emit(i, Ok(Value::Bool(*b != 0))))
            }
            Datatype::Uint8 => {
                (bytes.iter().enumerate()).try_for_each(|(i, b)| emit(i, Ok(Value::from(*b))))
            }
            Datatype::Int8 => (bytes.iter().enumerate())
                .try_for_each(|(i, b)| emit(i, Ok(Value::from(i8::from_le_bytes([*b]))))),
            Datatype::Uint16 => (bytes.as_chunks::<2>().0.iter().enumerate())
                .try_for_each(|(i, c)| emit(i, Ok(Value::from(u16::from_le_bytes(*c))))),
            Datatype::Int16 => (bytes.as_chunks::<2>().0.iter().enumerate())
                .try_for_each(|(i, c)| emit(i, Ok(Value::from(i16::from_le_bytes(*c))))),
            Datatype::Uint32 => (bytes.as_chunks::<4>().0.iter().enumerate())
                .try_for_each(|(i, c)| emit(i, Ok(Value::from(u32::from_le_bytes(*c))))),
            Datatype::Int32 => (bytes.as_chunks::<4>().0.iter().enumerate())
                .try_for_each(|(i, c)| emit(i, Ok(Value::from(i32::from_le_bytes(*c))))),
            Datatype::Uint64 => (bytes.as_chunks::<8>().0.iter().enumerate())
                .try_for_each(|(i, c)| emit(i, Ok(Value::from(u64::from_le_bytes(*c))))),
            Datatype::Int64 => (bytes.as_chunks::<8>().0.iter().enumerate())
                .try_for_each(|(i, c)| emit(i, Ok(Value::from(i64::from_le_bytes(*c))))),
            Datatype::Fp16 => {
                (bytes.as_chunks::<2>().0.iter().enumerate()).try_for_each(|(i, c)| {
                    let x = half_to_f32(u16::from_le_bytes(*c));
                    emit(i, float_value(name, i, f64::from(x)))
                })
            }
            Datatype::Bf16 => {
                (bytes.as_chunks::<2>().0.iter().enumerate()).try_for_each(|(i, c)| {
                    let x = f32::from_bits(u32::from(u16::from_le_bytes(*c)) << 16);
                    emit(i, float_value(name, i, f64::from(x)))
                })
            }
            Datatype::Fp32 => {
                (bytes.as_chunks::<4>().0.iter().enumerate()).try_for_each(|(i, c)| {
                    let x = f32::from_le_bytes(*c);
                    emit(i, float_value(name, i, f64::from(x)))
                })
            }
            Datatype::Fp64 => (bytes.as_chunks::<8>().0.iter().enumerate())
                .try_for_each(|(i, c)| emit(i, float_value(name, i, f64::from_le_bytes(*c)))),
            Datatype::Bytes => {
                for (i, element) in (BytesElements { rest: bytes }).enumerate() {
                    let element = element.map_err(|cut| cut_short(name, i as u64, cut))?;
                    let text = std::str::from_utf8(element).map_err(|_| not_utf8(name, i))?;
                    emit(i, Ok(Value::String(text.to_owned())))?;
                }
                Ok(())
            }
        }
    }

    /// The values read by `read`, as [`for_each_value`](Self::for_each_value) gives them; a
    /// value it refuses is an error naming its index and `rule`.
    pub(crate) fn read_values<T>(
        &self,
        rule: &str,
        read: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>, Malformed> {
        let mut out = Vec::with_capacity(self.value_count()?);
        self.for_each_value(|i, v| match read(v) {
            Some(x) => {
                out.push(x);
                Ok(())
            }
            None => malformed(format!("input `{}`: data[{i}] is {v}; {rule}", self.name)),
        })?;
        Ok(out)
    }

    /// Binary data of a numeric datatype, or an error for BOOL and BYTES.
    fn numeric_binary(&self) -> Result<Option<(Datatype, &[u8])>, Malformed> {
        let InputData::Binary(bytes) = &self.data else {
            return Ok(None);
        };
        match self.datatype() {
            Some(d @ (Datatype::Bool | Datatype::Bytes)) => malformed(format!(
                "input `{}` is {}; numbers are read from a numeric datatype",
                self.name,
                d.name()
            )),
            Some(d) => Ok(Some((d, bytes))),
            None => malformed(format!("input `{}` has an unknown datatype", self.name)),
        }
    }

    /// The values as `f32`: JSON numbers, or binary data of any numeric datatype (FP32
    /// as it is, the others converted).
    pub(crate) fn floats(&self) -> Result<Vec<f32>, Malformed> {
        let rule = format!("{} data must be JSON numbers", self.datatype);
        match self.numeric_binary()? {
            Some((Datatype::Fp32, bytes)) => {
                self.value_count()?;
                Ok(from_le::<f32>(bytes))
            }
            Some((Datatype::Fp64, bytes)) => {
                self.value_count()?;
                Ok(from_le::<f64>(bytes)
                    .into_iter()
                    .map(|x| x as f32)
                    .collect())
            }
            _ => self.read_values(&rule, |v| v.as_f64().map(|x| x as f32)),
        }
    }

    /// The values as `i64`: JSON integers, or binary data of an integer datatype (a UINT64
    /// past `i64::MAX` is refused).
    pub(crate) fn ints(&self) -> Result<Vec<i64>, Malformed> {
        let rule = format!(
            "{} data must be JSON integers that fit in 64 bits",
            self.datatype
        );
        match self.numeric_binary()? {
            Some((Datatype::Int64, bytes)) => {
                self.value_count()?;
                Ok(from_le::<i64>(bytes))
            }
            Some((Datatype::Int32, bytes)) => {
                self.value_count()?;
                Ok(from_le::<i32>(bytes).into_iter().map(i64::from).collect())
            }
            Some((Datatype::Fp16 | Datatype::Bf16 | Datatype::Fp32 | Datatype::Fp64, _)) => {
                malformed(format!(
                    "input `{}` is {}; integers are read from an integer datatype",
                    self.name, self.datatype
                ))
            }
            _ => self.read_values(&rule, Value::as_i64),
        }
    }

    /// The values as texts: JSON strings, or BYTES binary elements that are UTF-8.
    pub(crate) fn texts(&self) -> Result<Vec<String>, Malformed> {
        if let (InputData::Binary(bytes), Some(Datatype::Bytes)) = (&self.data, self.datatype()) {
            let mut out = Vec::with_capacity(self.value_count()?);
            for (i, element) in (BytesElements { rest: bytes }).enumerate() {
                let element = element.map_err(|cut| cut_short(&self.name, i as u64, cut))?;
                let text = std::str::from_utf8(element).map_err(|_| not_utf8(&self.name, i))?;
                out.push(text.to_owned());
            }
            return Ok(out);
        }
        self.read_values(
            &format!("{} data must be JSON strings", self.datatype),
            |v| v.as_str().map(str::to_owned),
        )
    }

    /// The values as byte strings: BYTES binary elements as they are (any bytes), or JSON
    /// strings' UTF-8 bytes.
    pub(crate) fn byte_strings(&self) -> Result<Vec<Vec<u8>>, Malformed> {
        if let (InputData::Binary(bytes), Some(Datatype::Bytes)) = (&self.data, self.datatype()) {
            let mut out = Vec::with_capacity(self.value_count()?);
            for (i, element) in (BytesElements { rest: bytes }).enumerate() {
                out.push(
                    element
                        .map_err(|cut| cut_short(&self.name, i as u64, cut))?
                        .to_vec(),
                );
            }
            return Ok(out);
        }
        self.read_values(
            &format!("{} data must be JSON strings", self.datatype),
            |v| v.as_str().map(|s| s.as_bytes().to_vec()),
        )
    }

    /// The values, row-major, as JSON values: borrowed from JSON data, converted from
    /// binary data.
    pub(crate) fn values(&self) -> Result<Vec<Cow<'_, Value>>, Malformed> {
        if let InputData::Json(values) = &self.data {
            fn walk<'a>(v: &'a Value, out: &mut Vec<Cow<'a, Value>>) {
                match v {
                    Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
                    other => out.push(Cow::Borrowed(other)),
                }
            }
            let mut out = Vec::with_capacity(self.value_count()?);
            walk(values, &mut out);
            return Ok(out);
        }
        let mut out = Vec::with_capacity(self.value_count()?);
        self.for_each_value(|_, v| {
            out.push(Cow::Owned(v.clone()));
            Ok::<(), Malformed>(())
        })?;
        Ok(out)
    }
}
