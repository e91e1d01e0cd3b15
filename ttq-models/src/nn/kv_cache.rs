//! Keys and values of past positions, for incremental decoding.

use burn::tensor::{backend::Backend, Tensor};

/// Positions are allocated in blocks of this many. The attention then runs over the whole
/// allocation (positions past the filled ones are masked), so its tensor shapes, and the
/// kernels a GPU backend compiles for them, change once per block instead of at every
/// decode step: with a cache that grew by one position per step, `ttq generate --backend
/// cuda` compiled new matmul, reduction and element-wise kernels at most steps (about 0.8 s
/// per token on Gemma 3 270M).
pub const KV_BLOCK: usize = 128;

/// The allocated positions of a cache holding `filled`: whole [`KV_BLOCK`]s. Every layer's
/// cache always has exactly this capacity, so callers can derive it (the attention masks
/// are built once per forward from it).
pub fn capacity_for(filled: usize) -> usize {
    filled.div_ceil(KV_BLOCK) * KV_BLOCK
}

/// Cached keys and values of one layer, each `[batch, kv_heads, capacity, head_dim]`, of
/// which the first `len` positions are filled (the rest are zeros).
#[derive(Debug, Clone, Default)]
pub struct LayerCache<B: Backend> {
    kv: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    len: usize,
}

impl<B: Backend> LayerCache<B> {
    /// Writes this step's keys and values after the filled positions (growing the
    /// allocation by whole [`KV_BLOCK`]s when needed) and returns the whole allocation with
    /// the number of filled positions.
    pub fn append(
        &mut self,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>, usize) {
        let [b, h, t, d] = k.dims();
        let filled = self.len + t;
        let (ck, cv) = match self.kv.take() {
            Some((ck, cv)) if ck.dims()[2] >= filled => (ck, cv),
            old => {
                let capacity = capacity_for(filled);
                let device = k.device();
                let zeros = || Tensor::<B, 4>::zeros([b, h, capacity, d], &device);
                match old {
                    Some((ok, ov)) => {
                        let keep = [0..b, 0..h, 0..self.len, 0..d];
                        (
                            zeros().slice_assign(keep.clone(), ok.slice(keep.clone())),
                            zeros().slice_assign(keep.clone(), ov.slice(keep)),
                        )
                    }
                    None => (zeros(), zeros()),
                }
            }
        };
        let new = [0..b, 0..h, self.len..filled, 0..d];
        let ck = ck.slice_assign(new.clone(), k);
        let cv = cv.slice_assign(new, v);
        self.len = filled;
        self.kv = Some((ck.clone(), cv.clone()));
        (ck, cv, filled)
    }
}

/// The cache of a whole model.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: (0..layers).map(|_| LayerCache::default()).collect(),
            len: 0,
        }
    }

    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The cache of layer `i`.
    pub fn layer(&mut self, i: usize) -> &mut LayerCache<B> {
        &mut self.layers[i]
    }

    /// Records that `tokens` more positions were cached.
    pub fn advance(&mut self, tokens: usize) {
        self.len += tokens;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    type B = NdArray<f32>;

    fn values(t: Tensor<B, 4>) -> Vec<f32> {
        t.into_data().into_vec().expect("f32 data")
    }

    /// Appends that cross a block boundary keep every earlier position, fill the new ones in
    /// order and leave the rest of the allocation zero.
    #[test]
    fn growth_keeps_positions_and_pads_with_zeros() {
        let device = Default::default();
        let mut cache = LayerCache::<B>::default();
        let parts: Vec<Tensor<B, 4>> = [100usize, 27, 1, 3]
            .iter()
            .map(|&t| Tensor::random([1, 2, t, 4], Distribution::Default, &device))
            .collect();
        let mut filled = 0;
        let (mut k, mut v) = (None, None);
        for p in &parts {
            let (ck, cv, f) = cache.append(p.clone(), p.clone().neg());
            filled += p.dims()[2];
            assert_eq!(f, filled);
            assert_eq!(ck.dims()[2], filled.div_ceil(KV_BLOCK) * KV_BLOCK);
            assert_eq!(ck.dims()[2], capacity_for(filled));
            k = Some(ck);
            v = Some(cv);
        }
        let (k, v) = (k.unwrap(), v.unwrap());
        assert_eq!(filled, 131);
        assert_eq!(k.dims(), [1, 2, 256, 4]);
        let want = Tensor::cat(parts, 2);
        assert_eq!(
            values(k.clone().slice([0..1, 0..2, 0..131, 0..4])),
            values(want.clone())
        );
        assert_eq!(
            values(v.slice([0..1, 0..2, 0..131, 0..4])),
            values(want.neg())
        );
        let tail = values(k.slice([0..1, 0..2, 131..256, 0..4]));
        assert!(tail.iter().all(|&x| x == 0.0));
    }
}
