//! The packed encoder in candle tensor operations, for any device and dtype (CUDA with f32,
//! f16 or bf16; the CPU for tests). Same layout as the CPU path: the tokens of a batch are
//! packed into one `[tokens, hidden]` matrix for every dense layer, and attention runs per
//! text over its own length, so no padding is computed.

use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::{BertShape, Segment, bert_root, kernels::Activation, norm_names};
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
    max_positions: usize,
    type_vocab: usize,
    vocab: usize,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_norm: Norm,
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
        let vb = bert_root(vb, shape);
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
        let load = || -> candle_core::Result<PortableBert> {
            let mut layers = Vec::with_capacity(shape.num_hidden_layers);
            for l in 0..shape.num_hidden_layers {
                let lvb = vb.pp(format!("encoder.layer.{l}"));
                let att = lvb.pp("attention");
                let sa = att.pp("self");
                // Q, K and V fused into one [3h, h] projection.
                let parts = ["query", "key", "value"]
                    .iter()
                    .map(|p| linear(sa.pp(*p), h, h))
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
                    attn_out: linear(att.pp("output.dense"), h, h)?,
                    attn_norm: norm(att.pp("output.LayerNorm"))?,
                    up: linear(lvb.pp("intermediate.dense"), h, i)?,
                    down: linear(lvb.pp("output.dense"), i, h)?,
                    out_norm: norm(lvb.pp("output.LayerNorm"))?,
                });
            }
            let emb = vb.pp("embeddings");
            Ok(PortableBert {
                hidden: h,
                heads: shape.num_attention_heads,
                eps: shape.layer_norm_eps as f32,
                act,
                max_positions: shape.max_position_embeddings,
                type_vocab: shape.type_vocab_size,
                vocab: shape.vocab_size,
                word: emb.get((shape.vocab_size, h), "word_embeddings.weight")?,
                position: emb.get(
                    (shape.max_position_embeddings, h),
                    "position_embeddings.weight",
                )?,
                token_type: emb.get((shape.type_vocab_size, h), "token_type_embeddings.weight")?,
                emb_norm: norm(emb.pp("LayerNorm"))?,
                layers,
                device: device.clone(),
            })
        };
        load().map_err(err)
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
            for (pos, (&id, &tt)) in t
                .ids
                .iter()
                .zip(t.type_ids)
                .take(self.max_positions)
                .enumerate()
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
        let tensor = |v: Vec<u32>| Tensor::from_vec(v, total, &self.device);
        let x = (self.word.index_select(&tensor(ids)?, 0)?
            + self.position.index_select(&tensor(positions)?, 0)?)?
        .add(&self.token_type.index_select(&tensor(types)?, 0)?)?;
        let mut x = self.emb_norm.forward(&x, self.eps)?;
        let (heads, d) = (self.heads, h / self.heads);
        let scale = 1.0 / (d as f64).sqrt();
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?; // [T, 3h]
            let mut contexts = Vec::with_capacity(texts.len());
            for w in offsets.windows(2) {
                let (start, len) = (w[0], w[1] - w[0]);
                if len == 0 {
                    continue;
                }
                let part = |i: usize| -> candle_core::Result<Tensor> {
                    qkv.narrow(0, start, len)?
                        .narrow(1, i * h, h)?
                        .reshape((len, heads, d))?
                        .transpose(0, 1)?
                        .contiguous()
                };
                let (q, k, v) = (part(0)?, part(1)?, part(2)?);
                let scores = (q.matmul(&k.t()?)? * scale)?;
                let probs = candle_nn::ops::softmax_last_dim(&scores)?;
                let ctx = probs.matmul(&v)?.transpose(0, 1)?.reshape((len, h))?;
                contexts.push(ctx);
            }
            let ctx = Tensor::cat(&contexts, 0)?;
            let attn = (layer.attn_out.forward(&ctx)? + &x)?;
            x = layer.attn_norm.forward(&attn, self.eps)?;
            let up = layer.up.forward(&x)?;
            let up = match self.act {
                Activation::Gelu => up.gelu_erf()?,
                Activation::GeluTanh => up.gelu()?,
                Activation::Relu => up.relu()?,
            };
            let out = (layer.down.forward(&up)? + &x)?;
            x = layer.out_norm.forward(&out, self.eps)?;
        }
        let x = x.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        debug_assert_eq!(x.dim(D::Minus1)?, h);
        Ok((x.flatten_all()?.to_vec1::<f32>()?, offsets))
    }
}
