//! The encoder families the packed engines run, and what sets them apart: where their
//! weights live in a checkpoint, how they number positions, whether they read token types
//! and whether attention adds a relative position bias.
//!
//! | family | `model_type` | positions | token types | attention |
//! |---|---|---|---|---|
//! | BERT | `bert` (or none) | `0..len` | yes | plain |
//! | RoBERTa, XLM-RoBERTa | `roberta`, `xlm-roberta` | from `pad_token_id + 1`, skipping pad tokens | one type, always 0 | plain |
//! | DistilBERT | `distilbert` | `0..len` | none | plain |
//! | MPNet | `mpnet` | from `2` (padding index 1), skipping pad tokens | none | + a relative position bias |
//!
//! All four are post-layer-norm encoders with the same layer: fused Q/K/V, attention,
//! output projection, residual + layer norm, feed-forward, residual + layer norm.

use candle_nn::VarBuilder;

use super::BertShape;

/// An encoder family (`config.json`'s `model_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arch {
    Bert,
    /// RoBERTa and XLM-RoBERTa: BERT's layer names under `roberta.`, positions numbered from
    /// `padding_idx + 1`, a single token type.
    Roberta,
    DistilBert,
    /// MPNet: positions as RoBERTa, and a bucketed relative position bias added to every
    /// layer's attention scores.
    MpNet,
}

/// The `model_type`s the text models run, for error messages.
pub(crate) const SUPPORTED: &[&str] = &["bert", "roberta", "xlm-roberta", "distilbert", "mpnet"];

/// MPNet's padding index: fixed in transformers' `MPNetEmbeddings`, whatever the config says.
const MPNET_PADDING_IDX: usize = 1;

/// Buckets of MPNet's relative position bias, as transformers computes them (its encoder
/// passes 32 whatever `relative_attention_num_buckets` says).
pub(crate) const MPNET_BUCKETS: usize = 32;

impl Arch {
    /// The family of a `model_type` (none: BERT); `None` for one this crate does not run.
    pub(crate) fn of(model_type: Option<&str>) -> Option<Arch> {
        match model_type {
            None | Some("bert") => Some(Arch::Bert),
            Some("roberta" | "xlm-roberta") => Some(Arch::Roberta),
            Some("distilbert") => Some(Arch::DistilBert),
            Some("mpnet") => Some(Arch::MpNet),
            Some(_) => None,
        }
    }

    /// The family's name as transformers spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Arch::Bert => "bert",
            Arch::Roberta => "roberta",
            Arch::DistilBert => "distilbert",
            Arch::MpNet => "mpnet",
        }
    }

    /// Whether the model reads token types (only BERT's pair models tell the two texts
    /// apart by them; the others' tokenizers return none and the models see zeros).
    pub(crate) fn token_types(self) -> bool {
        self == Arch::Bert
    }

    /// Whether the checkpoint has a token-type embedding table (RoBERTa keeps one row).
    pub(crate) fn has_token_type_table(self) -> bool {
        matches!(self, Arch::Bert | Arch::Roberta)
    }

    /// The padding index positions are numbered after (`padding_idx + 1` is the first
    /// text position), for the families that do so.
    pub(crate) fn padding_idx(self, shape: &BertShape) -> Option<usize> {
        match self {
            Arch::Roberta => Some(shape.pad_token_id),
            Arch::MpNet => Some(MPNET_PADDING_IDX),
            Arch::Bert | Arch::DistilBert => None,
        }
    }

    /// The prefix a task model (`*ForSequenceClassification`) puts the encoder under.
    fn prefix(self) -> &'static str {
        match self {
            Arch::Bert => "bert",
            Arch::Roberta => "roberta",
            Arch::DistilBert => "distilbert",
            Arch::MpNet => "mpnet",
        }
    }

    /// Layer `l`'s parameter names: `[Q, K, V, attention output, its norm, up, down,
    /// output norm]` under the returned layer prefix.
    pub(crate) fn layer_names(self, l: usize) -> (String, [&'static str; 8]) {
        match self {
            Arch::Bert | Arch::Roberta => (
                format!("encoder.layer.{l}"),
                [
                    "attention.self.query",
                    "attention.self.key",
                    "attention.self.value",
                    "attention.output.dense",
                    "attention.output.LayerNorm",
                    "intermediate.dense",
                    "output.dense",
                    "output.LayerNorm",
                ],
            ),
            Arch::DistilBert => (
                format!("transformer.layer.{l}"),
                [
                    "attention.q_lin",
                    "attention.k_lin",
                    "attention.v_lin",
                    "attention.out_lin",
                    "sa_layer_norm",
                    "ffn.lin1",
                    "ffn.lin2",
                    "output_layer_norm",
                ],
            ),
            Arch::MpNet => (
                format!("encoder.layer.{l}"),
                [
                    "attention.attn.q",
                    "attention.attn.k",
                    "attention.attn.v",
                    "attention.attn.o",
                    "attention.LayerNorm",
                    "intermediate.dense",
                    "output.dense",
                    "output.LayerNorm",
                ],
            ),
        }
    }

    /// Where the encoder's weights start in a checkpoint: at the root (a bare model, as
    /// sentence-transformers saves it), under the family's prefix (`bert.`, `roberta.`,
    /// ...: a task model) or under `{model_type}.`.
    pub(crate) fn root<'a>(self, vb: VarBuilder<'a>, shape: &BertShape) -> VarBuilder<'a> {
        let mut prefixes = vec![self.prefix()];
        prefixes.extend(shape.model_type.as_deref());
        for prefix in prefixes {
            if vb.contains_tensor(&format!("{prefix}.embeddings.word_embeddings.weight")) {
                return vb.pp(prefix);
            }
        }
        vb
    }
}

/// Each token's position id: `0..len`, or for the families numbering from `padding_idx + 1`
/// transformers' `create_position_ids_from_input_ids` (a pad token keeps `padding_idx`,
/// the others count on from it).
pub(crate) fn positions(ids: &[u32], padding_idx: Option<usize>) -> impl Iterator<Item = usize> {
    let mut count = 0;
    ids.iter()
        .enumerate()
        .map(move |(i, &id)| match padding_idx {
            None => i,
            Some(pad) if id as usize == pad => pad,
            Some(pad) => {
                count += 1;
                pad + count
            }
        })
}

/// The most tokens a text may have: the position table's rows, less those before
/// `padding_idx + 1` for the families numbering from there.
pub(crate) fn max_tokens(shape: &BertShape, arch: Arch) -> usize {
    match arch.padding_idx(shape) {
        // Saturating: a pad_token_id of u64::MAX wrapped `pad + 1` to 0 and loaded with
        // positions numbered from 0, silently wrong.
        Some(pad) => shape
            .max_position_embeddings
            .saturating_sub(pad.saturating_add(1)),
        None => shape.max_position_embeddings,
    }
}

/// MPNet's bucket of the relative position `rel` (key position minus query position):
/// transformers' `relative_position_bucket` with 32 buckets and a maximum distance of 128,
/// in the same f32 arithmetic (so the bucket edges agree).
pub(crate) fn mpnet_bucket(rel: i64) -> usize {
    let half = (MPNET_BUCKETS / 2) as i64; // 16: one half per direction
    let max_exact = half / 2; // 8
    let n = -rel;
    let mut bucket = if n < 0 { half } else { 0 };
    let n = n.abs();
    bucket += if n < max_exact {
        n
    } else {
        let scale = (128.0f64 / max_exact as f64).ln() as f32;
        let large = max_exact
            + ((n as f32 / max_exact as f32).ln() / scale * (half - max_exact) as f32) as i64;
        large.min(half - 1)
    };
    bucket as usize
}

/// MPNet's relative position bias laid out for attention: `[heads, 2·max_len − 1]`, entry
/// `(h, rel + max_len − 1)` the bias head `h` adds to a score whose key is `rel` positions
/// after its query. `table` is the checkpoint's `[buckets, heads]` embedding.
pub(crate) fn relative_bias(table: &[f32], heads: usize, max_len: usize) -> Vec<f32> {
    let span = 2 * max_len.max(1) - 1;
    let mut out = vec![0f32; heads * span];
    for (i, rel) in (-(max_len.max(1) as i64 - 1)..max_len.max(1) as i64).enumerate() {
        let bucket = mpnet_bucket(rel);
        for h in 0..heads {
            out[h * span + i] = table[bucket * heads + h];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_from_after_the_padding_index_and_skip_pad_tokens() {
        assert_eq!(positions(&[5, 6, 7], None).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(
            positions(&[0, 6, 2], Some(1)).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        // A literal `<pad>` in a text keeps position 1 and does not advance the count.
        assert_eq!(
            positions(&[0, 1, 6, 2], Some(1)).collect::<Vec<_>>(),
            [2, 1, 3, 4]
        );
    }

    #[test]
    fn mpnet_buckets_match_transformers_for_every_distance() {
        // Written by scripts/make-arch-fixtures.py from transformers' own function.
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/arch/mpnet-buckets.json"
        ))
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let from = json["from"].as_i64().unwrap();
        let buckets = json["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 1201);
        for (i, b) in buckets.iter().enumerate() {
            let rel = from + i as i64;
            assert_eq!(
                mpnet_bucket(rel),
                b.as_u64().unwrap() as usize,
                "relative position {rel}"
            );
        }
    }

    #[test]
    fn the_relative_bias_layout_puts_each_heads_bucket_value_at_its_distance() {
        // 32 buckets × 2 heads: value = bucket * 10 + head.
        let table: Vec<f32> = (0..MPNET_BUCKETS)
            .flat_map(|b| (0..2).map(move |h| (b * 10 + h) as f32))
            .collect();
        let bias = relative_bias(&table, 2, 4); // distances -3..=3
        assert_eq!(bias.len(), 2 * 7);
        for (i, rel) in (-3i64..=3).enumerate() {
            let b = mpnet_bucket(rel) as f32;
            assert_eq!(bias[i], b * 10.0);
            assert_eq!(bias[7 + i], b * 10.0 + 1.0);
        }
    }
}
