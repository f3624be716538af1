//! The numbers `inferd bench` sends: seeded random values, or rows read from
//! a `.npy`, CSV or JSON file, turned into typed tensor buffers.
//!
//! Values pass through `f64` on their way to a buffer, so integers beyond
//! 2^53 lose precision; a value that does not fit its input's type (0.5 for
//! an INT64, 300 for a UINT8) is an error naming its row, never a silent cast.

use std::path::Path;

use crate::tensor::{DataType, TensorData};

/// Rows of one input, flattened: `values.len()` is a multiple of `row_len`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub values: Vec<f64>,
    pub row_len: usize,
}

impl Rows {
    pub fn count(&self) -> usize {
        self.values.len() / self.row_len.max(1)
    }

    /// `n` rows starting at row `first`, wrapping round to the first row.
    pub fn take(&self, first: usize, n: usize) -> Vec<f64> {
        let count = self.count();
        (0..n)
            .flat_map(|i| {
                let row = (first + i) % count;
                &self.values[row * self.row_len..(row + 1) * self.row_len]
            })
            .copied()
            .collect()
    }
}

/// Reads a file of rows of `row_len` values each, by its extension.
pub fn read_rows(path: &Path, row_len: usize) -> Result<Rows, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let rows = match extension.as_str() {
        "npy" => read_npy(&bytes, row_len),
        "csv" => read_csv(&text(&bytes)?, row_len),
        "json" => read_json(&text(&bytes)?, row_len),
        _ => Err("input data must be a .npy, .csv or .json file".to_string()),
    }
    .map_err(|e| format!("{shown}: {e}"))?;
    if rows.count() == 0 {
        return Err(format!("{shown} holds no rows"));
    }
    Ok(rows)
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "not UTF-8 text".to_string())
}

/// CSV of numbers, one row a line. A first line that is not all numbers is
/// taken for a header and skipped; blank lines and lines starting with `#`
/// are skipped too.
fn read_csv(text: &str, row_len: usize) -> Result<Rows, String> {
    let mut values = Vec::new();
    let mut seen_data = false;
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let row: Result<Vec<f64>, _> = line.split(',').map(|f| f.trim().parse::<f64>()).collect();
        match row {
            Ok(row) if row.len() == row_len => values.extend(row),
            Ok(row) => {
                return Err(format!(
                    "line {number} has {} values; the input takes {row_len} a row",
                    row.len()
                ));
            }
            Err(_) if !seen_data => {} // a header
            Err(_) => return Err(format!("line {number} is not comma-separated numbers")),
        }
        seen_data = true;
    }
    Ok(Rows { values, row_len })
}

/// A JSON array of rows; each row is a number, a boolean, or an array of
/// them nested to any depth.
fn read_json(text: &str, row_len: usize) -> Result<Rows, String> {
    let document: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let serde_json::Value::Array(rows) = document else {
        return Err("the JSON must be an array of rows".to_string());
    };
    let mut values = Vec::with_capacity(rows.len() * row_len);
    for (i, row) in rows.iter().enumerate() {
        let start = values.len();
        flatten(row, &mut values).map_err(|e| format!("row {}: {e}", i + 1))?;
        let got = values.len() - start;
        if got != row_len {
            return Err(format!("row {} has {got} values; the input takes {row_len} a row", i + 1));
        }
    }
    Ok(Rows { values, row_len })
}

fn flatten(value: &serde_json::Value, out: &mut Vec<f64>) -> Result<(), String> {
    match value {
        serde_json::Value::Number(n) => out.push(n.as_f64().ok_or("a number out of range")?),
        serde_json::Value::Bool(b) => out.push(f64::from(u8::from(*b))),
        serde_json::Value::Array(items) => {
            for item in items {
                flatten(item, out)?;
            }
        }
        other => return Err(format!("{other} is not a number")),
    }
    Ok(())
}

/// A NumPy `.npy` file: a little-endian array of numbers or booleans in C
/// order. Its first dimension counts rows; the others must hold `row_len`
/// values. A one-dimensional array is read as consecutive rows.
fn read_npy(bytes: &[u8], row_len: usize) -> Result<Rows, String> {
    let (descr, shape, data) = npy_parts(bytes)?;
    let (order, kind, size) = {
        let mut chars = descr.chars();
        let order = chars.next().unwrap_or(' ');
        let kind = chars.next().unwrap_or(' ');
        (order, kind, chars.as_str().parse::<usize>().unwrap_or(0))
    };
    if order == '>' && size > 1 {
        return Err(format!("big-endian arrays ('{descr}') are not supported"));
    }
    let count: usize = shape.iter().product();
    if data.len() < count * size || size == 0 {
        return Err(format!("the array '{descr}' of shape {shape:?} is cut short"));
    }
    let row_elements: usize = shape.iter().skip(1).product();
    if shape.len() > 1 && row_elements != row_len {
        return Err(format!(
            "rows of shape {:?} hold {row_elements} values; the input takes {row_len} a row",
            &shape[1..]
        ));
    }
    if !count.is_multiple_of(row_len.max(1)) {
        return Err(format!("{count} values do not make rows of {row_len}"));
    }
    let chunks = data[..count * size].chunks_exact(size);
    let values: Vec<f64> = match (kind, size) {
        ('f', 2) => chunks.map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        ('f', 4) => chunks.map(|c| f32::from_le_bytes(c.try_into().unwrap()).into()).collect(),
        ('f', 8) => chunks.map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        ('i', 1) => chunks.map(|c| (c[0] as i8).into()).collect(),
        ('i', 2) => chunks.map(|c| i16::from_le_bytes(c.try_into().unwrap()).into()).collect(),
        ('i', 4) => chunks.map(|c| i32::from_le_bytes(c.try_into().unwrap()).into()).collect(),
        ('i', 8) => chunks.map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        ('u', 1) | ('b', 1) => chunks.map(|c| c[0].into()).collect(),
        ('u', 2) => chunks.map(|c| u16::from_le_bytes(c.try_into().unwrap()).into()).collect(),
        ('u', 4) => chunks.map(|c| u32::from_le_bytes(c.try_into().unwrap()).into()).collect(),
        ('u', 8) => chunks.map(|c| u64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        _ => return Err(format!("arrays of '{descr}' are not supported")),
    };
    Ok(Rows { values, row_len })
}

/// The `descr`, shape and data of a `.npy` file (format versions 1 to 3).
fn npy_parts(bytes: &[u8]) -> Result<(String, Vec<usize>, &[u8]), String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || !bytes.starts_with(MAGIC) {
        return Err("not a .npy file (no \\x93NUMPY magic)".to_string());
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => {
            (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12)
        }
        version => return Err(format!(".npy format version {version} is not supported")),
    };
    let header = bytes
        .get(header_start..header_start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("the .npy header is cut short")?;
    let field = |key: &str| {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr")
        .and_then(|v| v.strip_prefix('\'')?.split('\'').next())
        .ok_or("the .npy header has no 'descr'")?;
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err("Fortran-ordered arrays are not supported; save in C order".to_string());
    }
    let shape = field("shape")
        .and_then(|v| v.strip_prefix('(')?.split(')').next())
        .ok_or("the .npy header has no 'shape'")?
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().map_err(|_| format!("bad dimension '{d}' in the .npy shape")))
        .collect::<Result<Vec<usize>, String>>()?;
    Ok((descr.to_string(), shape, &bytes[header_start + header_len..]))
}

/// `values` as a buffer of `datatype`. Integers must be whole and in range,
/// booleans 0 or 1; `position(i)` names element `i` in the error.
pub fn typed(
    datatype: DataType,
    values: &[f64],
    position: impl Fn(usize) -> String,
) -> Result<TensorData, String> {
    fn ints<T: TryFrom<i128>>(values: &[f64]) -> Result<Vec<T>, usize> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let whole = v.is_finite() && v.fract() == 0.0;
                whole.then(|| T::try_from(v as i128).ok()).flatten().ok_or(i)
            })
            .collect()
    }
    let data = match datatype {
        DataType::Bool => values
            .iter()
            .enumerate()
            .map(|(i, &v)| match v {
                0.0 => Ok(false),
                1.0 => Ok(true),
                _ => Err(i),
            })
            .collect::<Result<_, _>>()
            .map(TensorData::Bool),
        DataType::Uint8 => ints(values).map(TensorData::Uint8),
        DataType::Uint16 => ints(values).map(TensorData::Uint16),
        DataType::Uint32 => ints(values).map(TensorData::Uint32),
        DataType::Uint64 => ints(values).map(TensorData::Uint64),
        DataType::Int8 => ints(values).map(TensorData::Int8),
        DataType::Int16 => ints(values).map(TensorData::Int16),
        DataType::Int32 => ints(values).map(TensorData::Int32),
        DataType::Int64 => ints(values).map(TensorData::Int64),
        DataType::Fp16 => {
            Ok(TensorData::Fp16(values.iter().map(|&v| half::f16::from_f64(v)).collect()))
        }
        DataType::Bf16 => {
            Ok(TensorData::Bf16(values.iter().map(|&v| half::bf16::from_f64(v)).collect()))
        }
        DataType::Fp32 => Ok(TensorData::Fp32(values.iter().map(|&v| v as f32).collect())),
        DataType::Fp64 => Ok(TensorData::Fp64(values.to_vec())),
        DataType::Bytes => return Err("BYTES inputs are not supported".to_string()),
    };
    data.map_err(|i| format!("{}: {} does not fit {datatype}", position(i), values[i]))
}

/// SplitMix64: a small generator whose output depends on nothing but its
/// seed, so that `--seed` gives the same data in every build and on every
/// platform, whatever a random-number crate does in its next version.
#[derive(Debug, Clone)]
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Random {
        Random(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` values for `datatype`: floats uniform in [lo, hi), integers
    /// uniform in [lo, hi] (rounded inwards), booleans either way.
    pub fn values(&mut self, datatype: DataType, n: usize, (lo, hi): (f64, f64)) -> Vec<f64> {
        match datatype {
            DataType::Bool => (0..n).map(|_| f64::from(u8::from(self.unit() < 0.5))).collect(),
            DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => {
                (0..n).map(|_| lo + self.unit() * (hi - lo)).collect()
            }
            _ => {
                let (lo, hi) = (lo.ceil(), hi.floor().max(lo.ceil()));
                (0..n).map(|_| (lo + (self.unit() * (hi - lo + 1.0)).floor()).min(hi)).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        file.extend_from_slice(&(header.len() as u16).to_le_bytes());
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(data);
        file
    }

    #[test]
    fn npy_arrays_of_each_common_type_read_as_rows() {
        let f32s: Vec<u8> = [1.5f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let rows = read_npy(&npy("<f4", "(2, 2)", &f32s), 2).unwrap();
        assert_eq!(rows, Rows { values: vec![1.5, 2.0, 3.0, 4.0], row_len: 2 });
        let f64s: Vec<u8> = [0.25f64, -1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(read_npy(&npy("<f8", "(2,)", &f64s), 1).unwrap().values, vec![0.25, -1.0]);
        let i64s: Vec<u8> = [7i64, -3, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
        let rows = read_npy(&npy("<i8", "(1, 3)", &i64s), 3).unwrap();
        assert_eq!(rows.values, vec![7.0, -3.0, 9.0]);
    }

    #[test]
    fn npy_rows_of_the_wrong_width_are_refused() {
        let f32s = [0u8; 24];
        let err = read_npy(&npy("<f4", "(2, 3)", &f32s), 2).unwrap_err();
        assert!(err.contains("hold 3 values; the input takes 2"), "{err}");
        let err = read_npy(&npy(">f4", "(2, 3)", &f32s), 3).unwrap_err();
        assert!(err.contains("big-endian"), "{err}");
        assert!(read_npy(b"PK\x03\x04 not numpy", 1).unwrap_err().contains("magic"));
    }

    #[test]
    fn csv_skips_a_header_and_checks_row_widths() {
        let rows = read_csv("a,b\n1,2\n\n# note\n3, 4.5\n", 2).unwrap();
        assert_eq!(rows.values, vec![1.0, 2.0, 3.0, 4.5]);
        assert_eq!(rows.count(), 2);
        let err = read_csv("1,2\n3\n", 2).unwrap_err();
        assert!(err.contains("line 2 has 1 values"), "{err}");
        assert!(read_csv("1,2\nx,y\n", 2).unwrap_err().contains("line 2"));
    }

    #[test]
    fn json_rows_may_be_nested() {
        let rows = read_json("[[1, 2], [[3], [4]], [true, false]]", 2).unwrap();
        assert_eq!(rows.values, vec![1.0, 2.0, 3.0, 4.0, 1.0, 0.0]);
        assert!(read_json("[[1, 2], [3]]", 2).unwrap_err().contains("row 2 has 1 values"));
        assert!(read_json("{\"a\": 1}", 1).is_err());
    }

    #[test]
    fn rows_wrap_round() {
        let rows = Rows { values: vec![1.0, 2.0, 3.0], row_len: 1 };
        assert_eq!(rows.take(2, 3), vec![3.0, 1.0, 2.0]);
    }

    #[test]
    fn values_that_do_not_fit_their_type_are_errors() {
        let at = |i: usize| format!("value {i}");
        assert_eq!(
            typed(DataType::Int64, &[1.0, -2.0], at).unwrap(),
            TensorData::Int64(vec![1, -2])
        );
        assert_eq!(
            typed(DataType::Int64, &[1.0, 0.5], at).unwrap_err(),
            "value 1: 0.5 does not fit INT64"
        );
        assert!(typed(DataType::Uint8, &[300.0], at).is_err());
        assert!(typed(DataType::Bool, &[2.0], at).is_err());
        assert_eq!(typed(DataType::Fp32, &[0.5], at).unwrap(), TensorData::Fp32(vec![0.5]));
    }

    #[test]
    fn random_values_are_seeded_and_in_range() {
        let a = Random::new(7).values(DataType::Fp32, 100, (2.0, 3.0));
        assert_eq!(a, Random::new(7).values(DataType::Fp32, 100, (2.0, 3.0)));
        assert_ne!(a, Random::new(8).values(DataType::Fp32, 100, (2.0, 3.0)));
        assert!(a.iter().all(|v| (2.0..3.0).contains(v)));
        let ints = Random::new(7).values(DataType::Int32, 1000, (0.0, 2.0));
        for k in [0.0, 1.0, 2.0] {
            assert!(ints.contains(&k), "{k} never drawn");
        }
        assert!(ints.iter().all(|v| [0.0, 1.0, 2.0].contains(v)));
    }
}
