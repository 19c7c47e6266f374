//! The packed encoder in candle tensor operations, for any device and dtype (CUDA with f32,
//! f16 or bf16; the CPU for tests). Same layout as the CPU path: the tokens of a batch are
//! packed into one `[tokens, hidden]` matrix for every dense layer, and attention runs per
//! text over its own length, so no padding is computed.

use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::{Arch, BertShape, Segment, arch, checked_arch, kernels::Activation, norm_names};
use crate::error::LoadError;

struct Norm {
    gamma: Tensor,
    beta: Tensor,
}

impl Norm {
    fn forward(&self, x: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.gamma, &self.beta, eps)
    }
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

/// The packed encoder on candle tensors.
pub(crate) struct PortableBert {
    hidden: usize,
    heads: usize,
    eps: f32,
    act: Activation,
    /// The most tokens of a text (the position table's usable rows).
    max_tokens: usize,
    /// Positions count from `padding_idx + 1` (RoBERTa, MPNet) instead of 0.
    padding_idx: Option<usize>,
    type_vocab: usize,
    vocab: usize,
    word: Tensor,
    position: Tensor,
    /// The token-type table, for the families that have one.
    token_type: Option<Tensor>,
    emb_norm: Norm,
    /// MPNet's relative position bias, `[heads, 2·max_tokens − 1]` on the CPU.
    relative_bias: Option<Vec<f32>>,
    layers: Vec<Layer>,
    device: Device,
}

impl PortableBert {
    /// The dtype of the weights.
    pub(crate) fn dtype(&self) -> candle_core::DType {
        self.word.dtype()
    }

    /// Loads the weights onto `device` in `dtype`.
    pub(crate) fn load(
        weights: &Path,
        shape: &BertShape,
        act: Activation,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, LoadError> {
        let err = |e: candle_core::Error| LoadError::weights(weights, e);
        let vb = crate::formats::var_builder(weights, dtype, device)?;
        let arch = checked_arch(weights, shape)?;
        let vb = arch.root(vb, shape);
        let (h, i) = (shape.hidden_size, shape.intermediate_size);
        let norm = |vb: VarBuilder| -> candle_core::Result<Norm> {
            let (g, b) = norm_names(&vb);
            Ok(Norm {
                gamma: vb.get(h, g)?,
                beta: vb.get(h, b)?,
            })
        };
        let linear =
            |vb: VarBuilder, inputs: usize, outputs: usize| -> candle_core::Result<Linear> {
                Ok(Linear::new(
                    vb.get((outputs, inputs), "weight")?,
                    Some(vb.get(outputs, "bias")?),
                ))
            };
        let max_tokens = arch::max_tokens(shape, arch);
        let heads = shape.num_attention_heads;
        let load = || -> candle_core::Result<PortableBert> {
            let mut layers = Vec::new();
            for l in 0..shape.num_hidden_layers {
                let (prefix, [q, k, v, o, o_norm, up, down, out_norm]) = arch.layer_names(l);
                let lvb = vb.pp(prefix);
                // Q, K and V fused into one [3h, h] projection.
                let parts = [q, k, v]
                    .iter()
                    .map(|p| linear(lvb.pp(*p), h, h))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let weight = Tensor::cat(
                    &parts.iter().map(|p| p.weight().clone()).collect::<Vec<_>>(),
                    0,
                )?;
                let bias = Tensor::cat(
                    &parts
                        .iter()
                        .filter_map(|p| p.bias().cloned())
                        .collect::<Vec<_>>(),
                    0,
                )?;
                layers.push(Layer {
                    qkv: Linear::new(weight, Some(bias)),
                    attn_out: linear(lvb.pp(o), h, h)?,
                    attn_norm: norm(lvb.pp(o_norm))?,
                    up: linear(lvb.pp(up), h, i)?,
                    down: linear(lvb.pp(down), i, h)?,
                    out_norm: norm(lvb.pp(out_norm))?,
                });
            }
            let emb = vb.pp("embeddings");
            let token_type = if arch.has_token_type_table() {
                Some(emb.get((shape.type_vocab_size, h), "token_type_embeddings.weight")?)
            } else {
                None
            };
            // Read before the relative bias is laid out: the file's table bounds
            // max_position_embeddings, and with it the layout's size.
            let position = emb.get(
                (shape.max_position_embeddings, h),
                "position_embeddings.weight",
            )?;
            let relative_bias = if arch == Arch::MpNet {
                let buckets = super::mpnet_buckets(shape);
                let table = vb
                    .pp("encoder")
                    .get((buckets, heads), "relative_attention_bias.weight")?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                Some(arch::relative_bias(&table, heads, max_tokens))
            } else {
                None
            };
            Ok(PortableBert {
                hidden: h,
                heads,
                eps: shape.layer_norm_eps as f32,
                act,
                max_tokens,
                padding_idx: arch.padding_idx(shape),
                type_vocab: shape.type_vocab_size,
                vocab: shape.vocab_size,
                word: emb.get((shape.vocab_size, h), "word_embeddings.weight")?,
                position,
                token_type,
                emb_norm: norm(emb.pp("LayerNorm"))?,
                relative_bias,
                layers,
                device: device.clone(),
            })
        };
        load().map_err(err)
    }

    /// MPNet's bias of head-by-head relative positions for a text of `len` tokens,
    /// `[heads, len, len]` in the weights' dtype; `None` for the other families.
    fn position_bias(&self, len: usize) -> candle_core::Result<Option<Tensor>> {
        let Some(bias) = &self.relative_bias else {
            return Ok(None);
        };
        let span = 2 * self.max_tokens - 1;
        let mut values = Vec::with_capacity(self.heads * len * len);
        for head in 0..self.heads {
            let bias = &bias[head * span..(head + 1) * span];
            for i in 0..len {
                let from = self.max_tokens - 1 - i;
                values.extend_from_slice(&bias[from..from + len]);
            }
        }
        let t = Tensor::from_vec(values, (self.heads, len, len), &self.device)?;
        Ok(Some(t.to_dtype(self.word.dtype())?))
    }

    /// Word + position (+ token type) embeddings of `ids`, then layer norm.
    fn embed(
        &self,
        ids: Vec<u32>,
        positions: Vec<u32>,
        types: Vec<u32>,
    ) -> candle_core::Result<Tensor> {
        let total = ids.len();
        let tensor = |v: Vec<u32>| Tensor::from_vec(v, total, &self.device);
        let mut x = (self.word.index_select(&tensor(ids)?, 0)?
            + self.position.index_select(&tensor(positions)?, 0)?)?;
        if let Some(token_type) = &self.token_type {
            x = x.add(&token_type.index_select(&tensor(types)?, 0)?)?;
        }
        self.emb_norm.forward(&x, self.eps)
    }

    /// Attention of the `len` rows of one text from `start` of the fused `qkv`
    /// (`[tokens, 3h]`), all heads: `softmax(scale · Q·Kᵀ + bias + mask) · V`, with MPNet's
    /// relative position `bias` (`[heads, len, len]`) and a padding `mask` (`[1, 1, len]`,
    /// 0 or the dtype's lowest value) where given. Returns the context rows `[len, h]`.
    fn attend(
        &self,
        qkv: &Tensor,
        start: usize,
        len: usize,
        bias: Option<&Tensor>,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let part = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(0, start, len)?
                .narrow(1, i * h, h)?
                .reshape((len, heads, d))?
                .transpose(0, 1)?
                .contiguous()
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let mut scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?; // [heads, len, len]
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        probs.matmul(&v)?.transpose(0, 1)?.reshape((len, h))
    }

    /// The feed-forward half of a layer and both residual norms, on `[tokens, h]` rows.
    fn finish_layer(&self, layer: &Layer, ctx: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        let attn = (layer.attn_out.forward(ctx)? + x)?;
        let x = layer.attn_norm.forward(&attn, self.eps)?;
        let up = layer.up.forward(&x)?;
        let up = match self.act {
            Activation::Gelu => up.gelu_erf()?,
            Activation::GeluTanh => up.gelu()?,
            Activation::Relu => up.relu()?,
        };
        let out = (layer.down.forward(&up)? + &x)?;
        layer.out_norm.forward(&out, self.eps)
    }

    /// Encodes a batch; returns the last hidden states packed (`[total_tokens, hidden]`, in
    /// f32 on the CPU) and each text's row offset.
    pub(crate) fn forward(
        &self,
        texts: &[Segment<'_>],
    ) -> candle_core::Result<(Vec<f32>, Vec<usize>)> {
        let h = self.hidden;
        let mut offsets = vec![0usize];
        let (mut ids, mut positions, mut types) = (Vec::new(), Vec::new(), Vec::new());
        for t in texts {
            let text = &t.ids[..t.ids.len().min(self.max_tokens)];
            for (pos, (&id, &tt)) in
                arch::positions(text, self.padding_idx).zip(text.iter().zip(t.type_ids))
            {
                ids.push(id.min(self.vocab as u32 - 1));
                positions.push(pos as u32);
                types.push(tt.min(self.type_vocab as u32 - 1));
            }
            offsets.push(ids.len());
        }
        let total = ids.len();
        if total == 0 {
            return Ok((Vec::new(), offsets));
        }
        let mut x = self.embed(ids, positions, types)?;
        let biases = offsets
            .windows(2)
            .map(|w| self.position_bias(w[1] - w[0]))
            .collect::<candle_core::Result<Vec<_>>>()?;
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?; // [T, 3h]
            let mut contexts = Vec::with_capacity(texts.len());
            for (w, bias) in offsets.windows(2).zip(&biases) {
                let (start, len) = (w[0], w[1] - w[0]);
                if len == 0 {
                    continue;
                }
                contexts.push(self.attend(&qkv, start, len, bias.as_ref(), None)?);
            }
            let ctx = Tensor::cat(&contexts, 0)?;
            x = self.finish_layer(layer, &ctx, &x)?;
        }
        let x = x.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        debug_assert_eq!(x.dim(D::Minus1)?, h);
        Ok((x.flatten_all()?.to_vec1::<f32>()?, offsets))
    }

    /// The same encoder on a batch padded to its longest text, as transformers computes
    /// it: every text is `len` rows (`pad_id` after its tokens, which keep position
    /// `padding_idx` where positions count from it), and an attention mask keeps the
    /// padding out of every softmax. Returns the hidden states `[batch, len, hidden]`
    /// flattened, and `len`.
    pub(crate) fn forward_padded(
        &self,
        texts: &[Segment<'_>],
        pad_id: u32,
    ) -> candle_core::Result<(Vec<f32>, usize)> {
        let n = texts.len();
        let len = texts
            .iter()
            .map(|t| t.ids.len().min(self.max_tokens))
            .max()
            .unwrap_or(0)
            .max(1);
        let pad_id = pad_id.min(self.vocab as u32 - 1);
        let (mut ids, mut positions, mut types) = (Vec::new(), Vec::new(), Vec::new());
        let mut mask = vec![0f32; n * len];
        for (row, t) in texts.iter().enumerate() {
            let mut padded: Vec<u32> = t.ids[..t.ids.len().min(self.max_tokens)].to_vec();
            mask[row * len..row * len + padded.len()].fill(1.0);
            let real = padded.len();
            padded.resize(len, pad_id);
            let mut type_ids = t.type_ids[..real].to_vec();
            type_ids.resize(len, 0);
            for (pos, (&id, &tt)) in
                arch::positions(&padded, self.padding_idx).zip(padded.iter().zip(&type_ids))
            {
                ids.push(id.min(self.vocab as u32 - 1));
                // Past the table only for padding rows of the families counting from 0,
                // which the mask hides.
                positions.push(pos.min(self.position.dim(0)? - 1) as u32);
                types.push(tt.min(self.type_vocab as u32 - 1));
            }
        }
        let mut x = self.embed(ids, positions, types)?; // [n·len, h]
        let dtype = self.word.dtype();
        // 0 for a real key, the dtype's lowest value for padding (transformers' mask).
        let lowest = match dtype {
            DType::F16 => f32::from(half::f16::MIN),
            DType::BF16 => f32::from(half::bf16::MIN),
            _ => f32::MIN,
        };
        let mask: Vec<f32> = mask
            .iter()
            .map(|&m| if m > 0.0 { 0.0 } else { lowest })
            .collect();
        let mask = Tensor::from_vec(mask, (n, 1, 1, len), &self.device)?.to_dtype(dtype)?;
        let bias = self.position_bias(len)?;
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?; // [n·len, 3h]
            // Text by text (each padded to `len`, its padding masked), so the scores are
            // one text's `[heads, len, len]` at a time, not the batch's: a batch of 64
            // texts of 512 tokens would hold 805 MB of them per copy.
            let mut contexts = Vec::with_capacity(n);
            for row in 0..n {
                let mask = mask.get(row)?;
                contexts.push(self.attend(&qkv, row * len, len, bias.as_ref(), Some(&mask))?);
            }
            let ctx = Tensor::cat(&contexts, 0)?;
            x = self.finish_layer(layer, &ctx, &x)?;
        }
        let x = x.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        Ok((x.flatten_all()?.to_vec1::<f32>()?, len))
    }
}
