//! sentence-transformers' `Pooling` module: token vectors → one sentence vector.

/// How token vectors become one sentence vector (sentence-transformers' `Pooling` module).
/// Several modes concatenate their vectors in the order the configuration lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pooling {
    /// The first token's (`[CLS]`) vector.
    Cls,
    /// The element-wise maximum over the tokens.
    Max,
    /// The mean over the tokens.
    Mean,
    /// The sum over the tokens divided by the square root of their number.
    MeanSqrtLen,
    /// The mean weighted by position: the token at position `p` (0-based, counted from
    /// the `[CLS]` token) weighs `p + 1`.
    WeightedMean,
    /// The last token's vector (for BERT, the `[SEP]` token).
    LastToken,
}

impl Pooling {
    /// The mode's name in a 6.x `pooling_mode` (`"cls"`, `"mean_sqrt_len_tokens"`, ...).
    pub(super) fn from_name(name: &str) -> Option<Pooling> {
        Some(match name {
            "cls" => Pooling::Cls,
            "max" => Pooling::Max,
            "mean" => Pooling::Mean,
            "mean_sqrt_len_tokens" => Pooling::MeanSqrtLen,
            "weightedmean" => Pooling::WeightedMean,
            "lasttoken" => Pooling::LastToken,
            _ => return None,
        })
    }

    /// The names [`from_name`](Self::from_name) knows, for error messages.
    pub(super) const NAMES: &'static str =
        "cls, max, mean, mean_sqrt_len_tokens, weightedmean, lasttoken";
}

/// Where CLS pooling reads when the prompt's tokens are left out of pooling
/// (`include_prompt: false`): the one behaviour of the pooling modes that changed between
/// sentence-transformers versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClsToken {
    /// Always the first token, `[CLS]` (sentence-transformers 2.x–5.x).
    First,
    /// The first token pooling keeps, i.e. the first token after the prompt
    /// (sentence-transformers 6.x: `attention_mask.argmax`).
    FirstKept,
}

/// Pools the token vectors of one text (`rows`: `[tokens, hidden]`) into one vector,
/// concatenating the modes in order, as sentence-transformers' `Pooling` does; the first
/// `skip` tokens (the `[CLS]` token and the prompt, when the prompt is left out) are masked
/// out as sentence-transformers masks them.
///
/// `skip` is below the number of tokens for every text the embedder prepares; a larger one
/// pools nothing (zeros; `-1e9` for max, as a fully masked max gives in
/// sentence-transformers 5.x) rather than failing.
pub(super) fn pool(
    rows: &[f32],
    hidden: usize,
    modes: &[Pooling],
    skip: usize,
    cls: ClsToken,
) -> Vec<f32> {
    let tokens = rows.len().checked_div(hidden).unwrap_or(0);
    let skip = skip.min(tokens);
    let kept = || rows.chunks_exact(hidden).enumerate().skip(skip);
    let row = |i: usize| rows.get(i * hidden..(i + 1) * hidden);
    let mut out = Vec::with_capacity(hidden * modes.len());
    // sentence-transformers clamps the divisors at 1e-9.
    let count = ((tokens - skip) as f32).max(1e-9);
    let sum = || {
        let mut acc = vec![0f32; hidden];
        for (_, r) in kept() {
            acc.iter_mut().zip(r).for_each(|(a, v)| *a += v);
        }
        acc
    };
    for mode in modes {
        match mode {
            Pooling::Cls => {
                let at = match cls {
                    ClsToken::First => 0,
                    ClsToken::FirstKept if skip < tokens => skip,
                    ClsToken::FirstKept => 0,
                };
                match row(at) {
                    Some(r) => out.extend_from_slice(r),
                    None => out.extend(std::iter::repeat_n(0.0, hidden)),
                }
            }
            Pooling::Max => {
                let mut acc = vec![f32::NEG_INFINITY; hidden];
                for (_, r) in kept() {
                    acc.iter_mut().zip(r).for_each(|(a, v)| *a = a.max(*v));
                }
                out.extend(acc.into_iter().map(|v| v.max(-1e9)));
            }
            Pooling::Mean => out.extend(sum().into_iter().map(|v| v / count)),
            Pooling::MeanSqrtLen => out.extend(sum().into_iter().map(|v| v / count.sqrt())),
            Pooling::WeightedMean => {
                let mut acc = vec![0f32; hidden];
                let mut weights = 0f32;
                for (p, r) in kept() {
                    let w = (p + 1) as f32;
                    weights += w;
                    acc.iter_mut().zip(r).for_each(|(a, v)| *a += w * v);
                }
                let weights = weights.max(1e-9);
                out.extend(acc.into_iter().map(|v| v / weights));
            }
            Pooling::LastToken => match (skip < tokens).then(|| row(tokens - 1)).flatten() {
                Some(r) => out.extend_from_slice(r),
                None => out.extend(std::iter::repeat_n(0.0, hidden)),
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Three tokens of width 2: [1, 10], [2, 20], [6, 60].
    const ROWS: [f32; 6] = [1.0, 10.0, 2.0, 20.0, 6.0, 60.0];

    #[test]
    fn each_mode_matches_its_sentence_transformers_definition() {
        let p = |m| pool(&ROWS, 2, &[m], 0, ClsToken::First);
        assert_eq!(p(Pooling::Cls), vec![1.0, 10.0]);
        assert_eq!(p(Pooling::Max), vec![6.0, 60.0]);
        assert_eq!(p(Pooling::Mean), vec![3.0, 30.0]);
        let s = 3f32.sqrt();
        assert_eq!(p(Pooling::MeanSqrtLen), vec![9.0 / s, 90.0 / s]);
        // Weights 1, 2, 3: (1 + 4 + 18) / 6.
        assert_eq!(p(Pooling::WeightedMean), vec![23.0 / 6.0, 230.0 / 6.0]);
        assert_eq!(p(Pooling::LastToken), vec![6.0, 60.0]);
        let both = pool(&ROWS, 2, &[Pooling::Mean, Pooling::Cls], 0, ClsToken::First);
        assert_eq!(both, vec![3.0, 30.0, 1.0, 10.0]);
    }

    #[test]
    fn a_left_out_prompt_is_masked_and_keeps_position_weights() {
        let p = |m, cls| pool(&ROWS, 2, &[m], 1, cls);
        assert_eq!(p(Pooling::Mean, ClsToken::First), vec![4.0, 40.0]);
        assert_eq!(p(Pooling::Max, ClsToken::First), vec![6.0, 60.0]);
        // Weights 2 and 3 stay those of positions 1 and 2: (4 + 18) / 5.
        assert_eq!(p(Pooling::WeightedMean, ClsToken::First), vec![4.4, 44.0]);
        // 5.x reads [CLS] regardless; 6.x the first token after the prompt.
        assert_eq!(p(Pooling::Cls, ClsToken::First), vec![1.0, 10.0]);
        assert_eq!(p(Pooling::Cls, ClsToken::FirstKept), vec![2.0, 20.0]);
        assert_eq!(p(Pooling::LastToken, ClsToken::First), vec![6.0, 60.0]);
    }

    #[test]
    fn nothing_left_to_pool_gives_finite_values_not_a_panic() {
        for m in [
            Pooling::Cls,
            Pooling::Max,
            Pooling::Mean,
            Pooling::MeanSqrtLen,
            Pooling::WeightedMean,
            Pooling::LastToken,
        ] {
            for cls in [ClsToken::First, ClsToken::FirstKept] {
                let v = pool(&ROWS, 2, &[m], 7, cls);
                assert_eq!(v.len(), 2);
                assert!(v.iter().all(|x| x.is_finite()), "{m:?}: {v:?}");
                assert_eq!(pool(&[], 2, &[m], 0, cls).len(), 2);
            }
        }
    }
}
