//! A padding-free BERT-family encoder for inference on CPU (BERT, RoBERTa/XLM-RoBERTa,
//! DistilBERT and MPNet: see [`arch`]).
//!
//! The tokens of every text in a batch are packed into one `[total_tokens, hidden]` matrix,
//! so every dense layer (the fused Q/K/V projection, the attention output, both feed-forward
//! layers) is one matrix product over real tokens only, and attention runs per text over its
//! own length. Nothing is computed for padding because there is none.
//!
//! Per layer: `qkv = x·Wqkv + b` (bias written first, the product accumulated onto it),
//! attention per (text, head) in parallel, `x = LN(ctx·Wo + bo + x)`,
//! `h = act(x·W1 + b1)`, `x = LN(h·W2 + b2 + x)`. Matrix products go through `gemm`, the
//! GEMM candle itself uses on CPU; the element-wise passes are fused kernels in
//! [`kernels`].

pub(crate) mod arch;
mod attention;
mod dense_bf16;
mod dense_f32;
mod dense_i8;
mod dense_plan;
#[cfg(test)]
mod dense_tests;
pub(crate) mod isa;
pub(crate) mod kernels;
mod portable;

pub(crate) use portable::PortableBert;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::Deserialize;

use crate::error::LoadError;
pub(crate) use arch::Arch;
use dense_bf16::PackedBf16;
use dense_f32::PackedF32;
use dense_i8::{MAX_K, PackedI8};
use isa::Isa;
use kernels::{Activation, View, add_layer_norm, layer_norm, matmul};

/// The parts of a Hugging Face BERT-family `config.json` the encoder needs (DistilBERT's
/// names — `dim`, `n_layers`, `n_heads`, `hidden_dim`, `activation` — are read too).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BertShape {
    pub(crate) vocab_size: usize,
    #[serde(alias = "dim")]
    pub(crate) hidden_size: usize,
    #[serde(alias = "n_layers")]
    pub(crate) num_hidden_layers: usize,
    #[serde(alias = "n_heads")]
    pub(crate) num_attention_heads: usize,
    #[serde(alias = "hidden_dim")]
    pub(crate) intermediate_size: usize,
    #[serde(alias = "activation")]
    pub(crate) hidden_act: String,
    pub(crate) max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub(crate) type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub(crate) layer_norm_eps: f64,
    #[serde(default)]
    pub(crate) position_embedding_type: Option<String>,
    #[serde(default)]
    pub(crate) model_type: Option<String>,
    #[serde(default)]
    pub(crate) pad_token_id: usize,
    /// MPNet: rows of the relative position bias table.
    #[serde(default)]
    pub(crate) relative_attention_num_buckets: Option<usize>,
}

impl BertShape {
    /// The encoder family of `model_type` (none: BERT); `None` when this crate does not
    /// run it.
    pub(crate) fn arch(&self) -> Option<Arch> {
        Arch::of(self.model_type.as_deref())
    }
}

fn default_type_vocab() -> usize {
    2
}

fn default_eps() -> f64 {
    1e-12
}

/// A dense layer `y = x · Wᵀ + b`.
struct Dense {
    weights: Weights,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

/// A dense layer's weights, in the layout of the kernel that multiplies them.
enum Weights {
    /// f32 through `gemm` (what runs below AVX-512, as before the packed kernels).
    Gemm {
        /// `[out, in]`, row-major (the checkpoint's layout), read as the transposed
        /// right-hand side of `x · Wᵀ`. GEMM packs it into panels while streaming it in
        /// order; the transposed `[in, out]` layout made small batches read it with a
        /// page-sized stride and was 25 % slower at batch 1.
        weight: Vec<f32>,
        /// The same weights pre-packed for small batches: output features in panels of
        /// [`PANEL`], each panel `[in, width]` row-major and contiguous. GEMM reads a panel
        /// as it is, so a small batch streams every weight once and packs nothing.
        panels: Vec<f32>,
    },
    /// f32, packed for the AVX-512 kernels of `dense_f32`.
    F32(PackedF32),
    /// bf16 (one copy, half the bytes), widened to f32 in registers.
    Bf16(PackedBf16),
    /// int8 per output channel, activations quantized per token at run time.
    Int8(PackedI8),
}

/// The arithmetic of the packed CPU encoder's matrix products
/// (`TextOptions::precision` of the text models). Embeddings,
/// layer norms, attention and activations stay f32 in every precision; accumulation is
/// always f32 (i32 for int8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Precision {
    /// f32 weights and activations (the reference).
    #[default]
    F32,
    /// Weights rounded to bf16 at load (round to nearest even): half the memory, f32
    /// activations and accumulation.
    Bf16,
    /// Weights quantized to int8 at load (symmetric, per output channel), activations
    /// quantized per token at run time (symmetric), i32 accumulation: the fastest on CPUs
    /// with AVX-512 VNNI, and about a third of f32's weight memory. The attention's Q/K/V
    /// projection stays bf16 (the layer most sensitive to quantized activations).
    Int8,
}

impl Precision {
    /// `f32`, `bf16` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "int8" | "i8" => Ok(Precision::Int8),
            other => Err(format!("precision `{other}`: use f32, bf16 or int8")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Output features per pre-packed weight panel. Narrow panels keep GEMM's reads of a panel
/// nearly sequential: at batch 1 on MiniLM (`bench_embed`, medians of 3 in one sitting)
/// widths 16 and 32 gave 161 texts/s, 48 gave 158, 64 gave 139 and 96 gave 151.
const PANEL: usize = 32;

/// Batches of at most this many tokens use the pre-packed panels; larger ones let GEMM pack
/// the weights itself, which costs little next to their compute. Measured on MiniLM
/// (`bench_embed`, medians of 3): panels made batch 1 +25 %, but batches of 32 texts 3 %
/// slower (192 against 198 texts/s); the threshold keeps the best of both.
const PANEL_MAX_ROWS: usize = 128;

impl Dense {
    /// `weight` (`[outputs, inputs]`) in the layout `precision` multiplies at the `isa`
    /// level: f32 goes to the packed AVX-512 kernels from [`Isa::Avx512`], to `gemm`
    /// below it.
    fn new(
        weight: Vec<f32>,
        bias: Vec<f32>,
        inputs: usize,
        outputs: usize,
        precision: Precision,
        isa: Isa,
    ) -> Self {
        let weights = match precision {
            Precision::F32 if isa >= Isa::Avx512 => {
                Weights::F32(PackedF32::new(&weight, outputs, inputs))
            }
            Precision::F32 => {
                let mut panels = Vec::with_capacity(weight.len());
                for start in (0..outputs).step_by(PANEL) {
                    let width = PANEL.min(outputs - start);
                    for k in 0..inputs {
                        panels.extend((start..start + width).map(|o| weight[o * inputs + k]));
                    }
                }
                Weights::Gemm { weight, panels }
            }
            Precision::Bf16 => Weights::Bf16(PackedBf16::new(&weight, outputs, inputs)),
            Precision::Int8 => Weights::Int8(PackedI8::new(&weight, outputs, inputs)),
        };
        Dense {
            weights,
            bias,
            inputs,
            outputs,
        }
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    up: Dense,
    down: Dense,
    out_norm: Norm,
}

/// The packed encoder's weights and shape.
pub(crate) struct PackedBert {
    precision: Precision,
    /// The instruction-set level the dense layers were packed for and run at.
    isa: Isa,
    hidden: usize,
    heads: usize,
    eps: f32,
    act: Activation,
    /// The most tokens of a text (the position table's usable rows).
    max_tokens: usize,
    /// Positions count from `padding_idx + 1` (RoBERTa, MPNet) instead of 0.
    padding_idx: Option<usize>,
    type_vocab: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    /// The token-type table (BERT, RoBERTa); empty for the families without one.
    token_type: Vec<f32>,
    emb_norm: Norm,
    /// MPNet's relative position bias, `[heads, 2·max_tokens − 1]` (see
    /// [`arch::relative_bias`]).
    relative_bias: Option<Vec<f32>>,
    layers: Vec<Layer>,
}

/// The token ids of one text, as the encoder takes them.
pub(crate) struct Segment<'a> {
    pub(crate) ids: &'a [u32],
    pub(crate) type_ids: &'a [u32],
}

fn to_vec(t: Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// The names of a layer norm's parameters: `weight`/`bias`, or `gamma`/`beta` in old
/// checkpoints.
pub(crate) fn norm_names(vb: &VarBuilder) -> (&'static str, &'static str) {
    if vb.contains_tensor("weight") {
        ("weight", "bias")
    } else {
        ("gamma", "beta")
    }
}

/// The feed-forward activation a config asks for, and a check of the shape the packed
/// encoders support.
pub(crate) fn activation(weights: &Path, shape: &BertShape) -> Result<Activation, LoadError> {
    let act = match shape.hidden_act.as_str() {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_approximate" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        other => {
            return Err(LoadError::Unsupported {
                path: weights.to_path_buf(),
                what: format!(
                    "hidden_act `{other}`; supported are gelu, gelu_new, gelu_pytorch_tanh, gelu_approximate and relu"
                ),
            });
        }
    };
    if let Some(kind) = &shape.position_embedding_type
        && kind != "absolute"
    {
        return Err(LoadError::Unsupported {
            path: weights.to_path_buf(),
            what: format!("position_embedding_type `{kind}`; only `absolute` is supported"),
        });
    }
    // A negative epsilon takes the square root of a negative variance (every output NaN);
    // one past f32's range divides every row by infinity (every output 0).
    let eps = shape.layer_norm_eps;
    if !(eps >= 0.0 && (eps as f32).is_finite()) {
        return Err(LoadError::weights(
            weights,
            format!("layer_norm_eps {eps}; it must be a finite f32 of at least 0"),
        ));
    }
    if !shape.hidden_size.is_multiple_of(shape.num_attention_heads) {
        return Err(LoadError::weights(
            weights,
            format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                shape.hidden_size, shape.num_attention_heads
            ),
        ));
    }
    Ok(act)
}

/// The family of `shape`'s `model_type`, refused by name when this crate does not run it,
/// and checks of what the family needs from the config.
pub(crate) fn checked_arch(weights: &Path, shape: &BertShape) -> Result<Arch, LoadError> {
    let Some(arch) = shape.arch() else {
        return Err(unsupported_model_type(weights, shape));
    };
    if arch::max_tokens(shape, arch) == 0 {
        return Err(LoadError::weights(
            weights,
            format!(
                "max_position_embeddings {} leaves no position for a token ({} numbers positions from padding_idx + 1 = {})",
                shape.max_position_embeddings,
                arch.name(),
                arch.padding_idx(shape).unwrap_or(0).saturating_add(1)
            ),
        ));
    }
    if arch == Arch::MpNet && mpnet_buckets(shape) < arch::MPNET_BUCKETS {
        return Err(LoadError::weights(
            weights,
            format!(
                "relative_attention_num_buckets {}; MPNet's attention reads {} buckets",
                mpnet_buckets(shape),
                arch::MPNET_BUCKETS
            ),
        ));
    }
    Ok(arch)
}

/// The error for a `model_type` this crate does not run, naming it and the supported ones.
pub(crate) fn unsupported_model_type(path: &Path, shape: &BertShape) -> LoadError {
    LoadError::Unsupported {
        path: path.to_path_buf(),
        what: format!(
            "model_type `{}`; supported are {}",
            shape.model_type.as_deref().unwrap_or_default(),
            arch::SUPPORTED.join(", ")
        ),
    }
}

/// Rows of MPNet's relative position bias table (transformers' default: 32).
fn mpnet_buckets(shape: &BertShape) -> usize {
    shape
        .relative_attention_num_buckets
        .unwrap_or(arch::MPNET_BUCKETS)
}

impl PackedBert {
    /// Loads the encoder's weights from a safetensors file, with or without the prefix of
    /// a task model (`bert.`, `roberta.`, `distilbert.`, `mpnet.` or `{model_type}.`).
    pub(crate) fn load(
        weights: &Path,
        shape: &BertShape,
        precision: Precision,
    ) -> Result<Self, LoadError> {
        let err = |e: candle_core::Error| LoadError::weights(weights, e);
        let act = activation(weights, shape)?;
        let isa = isa::active();
        if precision == Precision::Int8 && shape.intermediate_size.max(shape.hidden_size) > MAX_K {
            return Err(LoadError::Unsupported {
                path: weights.to_path_buf(),
                what: format!(
                    "int8 precision with layers of more than {MAX_K} inputs (intermediate_size {}); use f32 or bf16",
                    shape.intermediate_size
                ),
            });
        }
        let vb = crate::formats::var_builder(weights, DType::F32, &Device::Cpu)?;
        let arch = checked_arch(weights, shape)?;
        let vb = arch.root(vb, shape);
        let (h, i) = (shape.hidden_size, shape.intermediate_size);
        let get = |vb: &VarBuilder, dims: &[usize], name: &str| -> candle_core::Result<Vec<f32>> {
            to_vec(vb.get(dims, name)?)
        };
        let norm = |vb: VarBuilder| -> candle_core::Result<Norm> {
            let (g, b) = norm_names(&vb);
            Ok(Norm {
                gamma: get(&vb, &[h], g)?,
                beta: get(&vb, &[h], b)?,
            })
        };
        let dense = |parts: &[VarBuilder],
                     inputs: usize,
                     outputs: usize,
                     precision: Precision|
         -> candle_core::Result<Dense> {
            // Several projections (Q, K, V) are stacked along the output dimension.
            let total = outputs * parts.len();
            // Not sized from the config: its numbers are checked against the file's
            // tensors by `get`, after which the file's bytes bound every allocation.
            let (mut weight, mut bias) = (Vec::new(), Vec::new());
            for vb in parts {
                weight.extend(get(vb, &[outputs, inputs], "weight")?);
                bias.extend(get(vb, &[outputs], "bias")?);
            }
            Ok(Dense::new(weight, bias, inputs, total, precision, isa))
        };
        let emb = vb.pp("embeddings");
        // The Q/K/V projection reads the layer norm's output, whose few outlier channels
        // per-token int8 quantization handles worst: on MiniLM's 200 references, all-int8
        // gave min cosine 0.9857 (mean 0.9968); bf16 Q/K/V 0.9941 (0.9986), while bf16 for
        // any other layer kind left the min below 0.99.
        let qkv_precision = match precision {
            Precision::Int8 => Precision::Bf16,
            other => other,
        };
        let max_tokens = arch::max_tokens(shape, arch);
        let heads = shape.num_attention_heads;
        let load = || -> candle_core::Result<PackedBert> {
            let mut layers = Vec::new();
            for l in 0..shape.num_hidden_layers {
                let (prefix, [q, k, v, o, o_norm, up, down, out_norm]) = arch.layer_names(l);
                let lvb = vb.pp(prefix);
                layers.push(Layer {
                    qkv: dense(&[lvb.pp(q), lvb.pp(k), lvb.pp(v)], h, h, qkv_precision)?,
                    attn_out: dense(&[lvb.pp(o)], h, h, precision)?,
                    attn_norm: norm(lvb.pp(o_norm))?,
                    up: dense(&[lvb.pp(up)], h, i, precision)?,
                    down: dense(&[lvb.pp(down)], i, h, precision)?,
                    out_norm: norm(lvb.pp(out_norm))?,
                });
            }
            let token_type = if arch.has_token_type_table() {
                get(
                    &emb,
                    &[shape.type_vocab_size, h],
                    "token_type_embeddings.weight",
                )?
            } else {
                Vec::new()
            };
            // Read before the relative bias is laid out: the file's table bounds
            // max_position_embeddings, and with it the layout's size.
            let position = get(
                &emb,
                &[shape.max_position_embeddings, h],
                "position_embeddings.weight",
            )?;
            let relative_bias = if arch == Arch::MpNet {
                let table = get(
                    &vb.pp("encoder"),
                    &[mpnet_buckets(shape), heads],
                    "relative_attention_bias.weight",
                )?;
                Some(arch::relative_bias(&table, heads, max_tokens))
            } else {
                None
            };
            Ok(PackedBert {
                precision,
                isa,
                hidden: h,
                heads,
                eps: shape.layer_norm_eps as f32,
                act,
                max_tokens,
                padding_idx: arch.padding_idx(shape),
                type_vocab: shape.type_vocab_size,
                word: get(&emb, &[shape.vocab_size, h], "word_embeddings.weight")?,
                position,
                token_type,
                emb_norm: norm(emb.pp("LayerNorm"))?,
                relative_bias,
                layers,
            })
        };
        load().map_err(err)
    }

    /// The precision of the dense layers.
    pub(crate) fn precision(&self) -> Precision {
        self.precision
    }

    /// The instruction-set level the dense layers run at.
    pub(crate) fn isa(&self) -> Isa {
        self.isa
    }

    /// Bytes held by the dense layers' weights (most of the model).
    pub(crate) fn dense_bytes(&self) -> usize {
        let bytes = |d: &Dense| match &d.weights {
            Weights::Gemm { weight, panels } => (weight.len() + panels.len()) * 4,
            Weights::F32(w) => w.bytes(),
            Weights::Bf16(w) => w.bytes(),
            Weights::Int8(w) => w.bytes(),
        };
        let layers = self.layers.iter();
        layers
            .map(|l| bytes(&l.qkv) + bytes(&l.attn_out) + bytes(&l.up) + bytes(&l.down))
            .sum()
    }

    /// Encodes a batch of texts; returns the last hidden states of all tokens, packed
    /// (`[total_tokens, hidden]`, text after text), and each text's row offset.
    ///
    /// Ids must be below the vocabulary size, type ids below the type vocabulary size and
    /// each text at most `max_position_embeddings` long: the embedder guarantees all three.
    pub(crate) fn forward(&self, texts: &[Segment<'_>], threads: usize) -> (Vec<f32>, Vec<usize>) {
        let h = self.hidden;
        let mut offsets = Vec::with_capacity(texts.len() + 1);
        offsets.push(0);
        for t in texts {
            offsets.push(offsets[offsets.len() - 1] + t.ids.len().min(self.max_tokens));
        }
        let total = offsets[texts.len()];

        // Embeddings: word + position (+ token type), then layer norm.
        let tokens: Vec<(usize, u32, u32)> = texts
            .iter()
            .flat_map(|t| {
                let ids = &t.ids[..t.ids.len().min(self.max_tokens)];
                arch::positions(ids, self.padding_idx)
                    .zip(ids.iter().zip(t.type_ids))
                    .map(|(pos, (&id, &tt))| (pos, id, tt))
            })
            .collect();
        let mut x = vec![0f32; total * h];
        let vocab = self.word.len() / h;
        let positions = self.position.len() / h;
        x.par_chunks_mut(h)
            .zip(tokens.par_iter())
            .for_each(|(row, &(pos, id, tt))| {
                let id = (id as usize).min(vocab - 1);
                let pos = pos.min(positions - 1);
                let w = &self.word[id * h..(id + 1) * h];
                let p = &self.position[pos * h..(pos + 1) * h];
                for j in 0..h {
                    row[j] = w[j] + p[j];
                }
                if !self.token_type.is_empty() {
                    let tt = (tt as usize).min(self.type_vocab - 1);
                    let ty = &self.token_type[tt * h..(tt + 1) * h];
                    for j in 0..h {
                        row[j] += ty[j];
                    }
                }
            });
        layer_norm(&mut x, &self.emb_norm.gamma, &self.emb_norm.beta, self.eps);

        let inter = self.layers.first().map_or(0, |l| l.up.outputs);
        let mut qkv = vec![0f32; total * 3 * h];
        let mut ctx = vec![0f32; total * h];
        let mut tmp = vec![0f32; total * h];
        let mut up = vec![0f32; total * inter];
        for layer in &self.layers {
            dense(&x, &layer.qkv, &mut qkv, total, threads, true, self.isa);
            self.attention(&qkv, &offsets, &mut ctx);
            dense(
                &ctx,
                &layer.attn_out,
                &mut tmp,
                total,
                threads,
                false,
                self.isa,
            );
            add_layer_norm(
                &mut tmp,
                &layer.attn_out.bias,
                &x,
                &layer.attn_norm.gamma,
                &layer.attn_norm.beta,
                self.eps,
            );
            std::mem::swap(&mut x, &mut tmp);
            dense(&x, &layer.up, &mut up, total, threads, false, self.isa);
            kernels::bias_activate(&mut up, &layer.up.bias, self.act);
            dense(&up, &layer.down, &mut tmp, total, threads, false, self.isa);
            add_layer_norm(
                &mut tmp,
                &layer.down.bias,
                &x,
                &layer.out_norm.gamma,
                &layer.out_norm.beta,
                self.eps,
            );
            std::mem::swap(&mut x, &mut tmp);
        }
        (x, offsets)
    }

    /// Scaled dot-product attention of every text over its own tokens, all heads, in
    /// parallel over (text, head). `qkv` rows are `[q | k | v]`; writes `ctx` rows.
    fn attention(&self, qkv: &[f32], offsets: &[usize], ctx: &mut [f32]) {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let texts = offsets.len() - 1;
        let ctx_ptr = SendPtr(ctx.as_mut_ptr());
        let span = 2 * self.max_tokens - 1;
        (0..texts * heads).into_par_iter().for_each(|task| {
            let (t, head) = (task / heads, task % heads);
            let (start, len) = (offsets[t], offsets[t + 1] - offsets[t]);
            if len == 0 {
                return;
            }
            let ctx_ptr = &ctx_ptr;
            let bias = self
                .relative_bias
                .as_ref()
                .map(|b| (&b[head * span..(head + 1) * span], self.max_tokens));
            SCRATCH.with_borrow_mut(|scratch| {
                let base = start * 3 * h + head * d;
                let rows = &qkv[base..(start + len) * 3 * h];
                let out = attention::head(
                    rows,
                    &rows[h..],
                    &rows[2 * h..],
                    3 * h,
                    len,
                    d,
                    scale,
                    bias,
                    scratch,
                );
                for (i, row) in out.chunks_exact(d).enumerate() {
                    // SAFETY: this task alone writes ctx rows start..start+len, columns
                    // head*d..(head+1)*d, all inside ctx (total rows × h).
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            row.as_ptr(),
                            ctx_ptr.0.add((start + i) * h + head * d),
                            d,
                        );
                    }
                }
            });
        });
    }
}

thread_local! {
    /// Per-thread scratch of attention, reused across tasks and batches.
    static SCRATCH: std::cell::RefCell<attention::Scratch> =
        std::cell::RefCell::new(attention::Scratch::default());
}

/// A raw pointer that tasks writing disjoint parts of one buffer may share.
struct SendPtr(*mut f32);
// SAFETY: used only for disjoint writes, see `attention`.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// `out[rows × outputs] = x[rows × inputs] · Wᵀ (+ b when `with_bias`)`. Without the bias
/// the caller adds it in its next element-wise pass, which saves a pass over `out`.
fn dense(
    x: &[f32],
    layer: &Dense,
    out: &mut [f32],
    rows: usize,
    threads: usize,
    with_bias: bool,
    isa: Isa,
) {
    let n = layer.outputs;
    let out = &mut out[..rows * n];
    let x = &x[..rows * layer.inputs];
    let bias = with_bias.then_some(&layer.bias[..]);
    let (weight, panels) = match &layer.weights {
        Weights::Gemm { weight, panels } => (weight, panels),
        // At the level the weights were packed for at load.
        Weights::F32(w) => return dense_f32::dense_f32_with(isa, x, w, bias, out, rows, threads),
        Weights::Bf16(w) => {
            return dense_bf16::dense_bf16_with(isa, x, w, bias, out, rows, threads);
        }
        Weights::Int8(w) => return dense_i8::dense_i8_with(isa, x, w, bias, out, rows, threads),
    };
    if with_bias {
        for row in out.chunks_exact_mut(n) {
            row.copy_from_slice(&layer.bias);
        }
    }
    if rows <= PANEL_MAX_ROWS {
        let out_ptr = SendPtr(out.as_mut_ptr());
        let k = layer.inputs;
        (0..n.div_ceil(PANEL)).into_par_iter().for_each(|p| {
            let start = p * PANEL;
            let width = PANEL.min(n - start);
            let out_ptr = &out_ptr;
            // SAFETY: panel p is `[k, width]` at offset start·k of `panels`; this task alone
            // writes columns start..start+width of the rows × n output.
            unsafe {
                matmul(
                    rows,
                    width,
                    k,
                    out_ptr.0.add(start),
                    View::rows(n),
                    with_bias,
                    x.as_ptr(),
                    View::rows(k),
                    panels.as_ptr().add(start * k),
                    View::rows(width),
                    1.0,
                    1,
                );
            }
        });
        return;
    }
    // SAFETY: x is rows × inputs, weight is outputs × inputs (read as its transpose), out is
    // rows × outputs, all contiguous row-major and distinct buffers.
    unsafe {
        matmul(
            rows,
            n,
            layer.inputs,
            out.as_mut_ptr(),
            View::rows(n),
            with_bias,
            x.as_ptr(),
            View::rows(layer.inputs),
            weight.as_ptr(),
            View {
                rs: 1,
                cs: layer.inputs as isize,
            },
            1.0,
            threads,
        );
    }
}
