//! A minimal GGUF writer for building synthetic test files.
#![allow(dead_code)]

/// GGUF metadata value type ids.
pub mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// ggml type ids used in the tests.
pub mod gt {
    pub const F32: u32 = 0;
    pub const F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q8_0: u32 = 8;
    pub const Q2_K: u32 = 10;
    pub const BF16: u32 = 30;
}

pub fn enc_str(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// Encoded array: element type, count, then the already-encoded elements.
pub fn enc_array(elem_type: u32, n: u64, elems: &[u8]) -> Vec<u8> {
    let mut v = elem_type.to_le_bytes().to_vec();
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(elems);
    v
}

pub struct Tensor {
    pub name: Vec<u8>,
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
    /// Overrides the computed offset (for corrupt-file tests).
    pub offset: Option<u64>,
}

/// Where things ended up in a built file.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// End of the tensor infos (start of padding).
    pub header_end: usize,
    /// Start of the data section.
    pub data_offset: usize,
}

pub struct GgufWriter {
    pub magic: [u8; 4],
    pub version: u32,
    /// (raw key bytes, value type, encoded value)
    pub kvs: Vec<(Vec<u8>, u32, Vec<u8>)>,
    pub tensors: Vec<Tensor>,
    pub alignment: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            magic: *b"GGUF",
            version: 3,
            kvs: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
        }
    }

    pub fn kv_raw(&mut self, key: &str, ty: u32, value: Vec<u8>) -> &mut Self {
        self.kvs.push((key.as_bytes().to_vec(), ty, value));
        self
    }
    pub fn kv_u8(&mut self, key: &str, v: u8) -> &mut Self {
        self.kv_raw(key, vt::U8, v.to_le_bytes().to_vec())
    }
    pub fn kv_i8(&mut self, key: &str, v: i8) -> &mut Self {
        self.kv_raw(key, vt::I8, v.to_le_bytes().to_vec())
    }
    pub fn kv_u16(&mut self, key: &str, v: u16) -> &mut Self {
        self.kv_raw(key, vt::U16, v.to_le_bytes().to_vec())
    }
    pub fn kv_i16(&mut self, key: &str, v: i16) -> &mut Self {
        self.kv_raw(key, vt::I16, v.to_le_bytes().to_vec())
    }
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.kv_raw(key, vt::U32, v.to_le_bytes().to_vec())
    }
    pub fn kv_i32(&mut self, key: &str, v: i32) -> &mut Self {
        self.kv_raw(key, vt::I32, v.to_le_bytes().to_vec())
    }
    pub fn kv_u64(&mut self, key: &str, v: u64) -> &mut Self {
        self.kv_raw(key, vt::U64, v.to_le_bytes().to_vec())
    }
    pub fn kv_i64(&mut self, key: &str, v: i64) -> &mut Self {
        self.kv_raw(key, vt::I64, v.to_le_bytes().to_vec())
    }
    pub fn kv_f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.kv_raw(key, vt::F32, v.to_le_bytes().to_vec())
    }
    pub fn kv_f64(&mut self, key: &str, v: f64) -> &mut Self {
        self.kv_raw(key, vt::F64, v.to_le_bytes().to_vec())
    }
    pub fn kv_bool(&mut self, key: &str, v: bool) -> &mut Self {
        self.kv_raw(key, vt::BOOL, vec![v as u8])
    }
    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.kv_raw(key, vt::STRING, enc_str(v.as_bytes()))
    }
    pub fn kv_str_array(&mut self, key: &str, v: &[&str]) -> &mut Self {
        let elems: Vec<u8> = v.iter().flat_map(|s| enc_str(s.as_bytes())).collect();
        self.kv_raw(
            key,
            vt::ARRAY,
            enc_array(vt::STRING, v.len() as u64, &elems),
        )
    }
    pub fn kv_i32_array(&mut self, key: &str, v: &[i32]) -> &mut Self {
        let elems: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.kv_raw(key, vt::ARRAY, enc_array(vt::I32, v.len() as u64, &elems))
    }
    pub fn kv_f32_array(&mut self, key: &str, v: &[f32]) -> &mut Self {
        let elems: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.kv_raw(key, vt::ARRAY, enc_array(vt::F32, v.len() as u64, &elems))
    }

    pub fn tensor(&mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push(Tensor {
            name: name.as_bytes().to_vec(),
            dims: dims.to_vec(),
            type_id,
            data,
            offset: None,
        });
        self
    }

    pub fn f32_tensor(&mut self, name: &str, dims: &[u64], values: &[f32]) -> &mut Self {
        let data = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.tensor(name, dims, gt::F32, data)
    }

    pub fn build(&self) -> Vec<u8> {
        self.build_with_layout().0
    }

    pub fn build_with_layout(&self) -> (Vec<u8>, Layout) {
        let mut out = Vec::new();
        out.extend_from_slice(&self.magic);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for (k, ty, v) in &self.kvs {
            out.extend_from_slice(&enc_str(k));
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(v);
        }
        let align = self.alignment.max(1);
        let mut offsets = Vec::new();
        let mut next = 0u64;
        for t in &self.tensors {
            // Tensors with an overridden offset get no data written and do not move `next`.
            offsets.push(t.offset.unwrap_or(next));
            if t.offset.is_none() {
                next = (next + t.data.len() as u64).div_ceil(align) * align;
            }
        }
        for (t, off) in self.tensors.iter().zip(&offsets) {
            out.extend_from_slice(&enc_str(&t.name));
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.type_id.to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
        }
        let header_end = out.len();
        let data_offset = (header_end as u64).div_ceil(align) * align;
        out.resize(data_offset as usize, 0);
        for (t, off) in self.tensors.iter().zip(&offsets) {
            if t.offset.is_some() {
                continue;
            }
            let at = data_offset as usize + *off as usize;
            if out.len() < at + t.data.len() {
                out.resize(at + t.data.len(), 0);
            }
            out[at..at + t.data.len()].copy_from_slice(&t.data);
        }
        (
            out,
            Layout {
                header_end,
                data_offset: data_offset as usize,
            },
        )
    }
}

/// A Q8_0 block: scale `d` and 32 quants.
pub fn q8_0_block(d: f32, qs: [i8; 32]) -> Vec<u8> {
    let mut b = half::f16::from_f32(d).to_le_bytes().to_vec();
    b.extend(qs.iter().map(|&q| q as u8));
    b
}

/// Decode a hex string into bytes.
pub fn from_hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd-length hex");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}
