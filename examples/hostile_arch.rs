//! The encoder families attacked from outside: loads one (possibly hostile) model
//! directory as an embedder, a text classifier or a cross-encoder, runs one input on it
//! and reports. `scripts/hostile-arch.sh` runs each case in its own process under an
//! address-space cap and a timeout.
//!
//! Usage: `hostile_arch KIND DIR [engine=packed|portable|padded] [precision=f32|bf16|int8]
//! [input=NAME] [batch=N] [max_seq=N]`; KIND is `embed`, `classify` or `rerank`.
//!
//! Inputs: `basic` (a short text or pair), `big` (1 MiB of words; each side of a pair),
//! `over` (1 MiB + 1 byte), `pads` (1 MiB of `<pad>`), `special` (1 MiB of literal
//! `<s></s>`), `long` (a text of some 600 words), `mixed` (short and long texts).
//!
//! Exit status: 0 answered (the first numbers on stdout, `NONFINITE` when any is not
//! finite), 2 load refused, 3 input refused, 4 forward pass refused, 1 bad usage. A panic
//! (101) or an abort (134) or a kill shows as any other status.

use std::time::Instant;

use modelhost::models::classifier::{CrossEncoder, TextClassifier, TextPair};
use modelhost::models::sentence::SentenceEmbedder;
use modelhost::models::text::{Engine, Precision, TextOptions};

const MIB: usize = 1 << 20;

fn repeat_to(unit: &str, bytes: usize) -> String {
    let mut s = unit.repeat(bytes / unit.len() + 1);
    s.truncate(bytes);
    // Keep the cut on a char boundary.
    while !s.is_char_boundary(s.len()) {
        s.pop();
    }
    s
}

fn text(input: &str) -> String {
    match input {
        "basic" => "The quick brown fox jumps over the lazy dog.".into(),
        "big" => repeat_to("word ", MIB),
        "over" => repeat_to("word ", MIB + 1),
        "pads" => repeat_to("<pad>", MIB),
        "special" => repeat_to("<s></s>", MIB),
        "long" => repeat_to("lorem ipsum dolor sit amet ", 600 * 6),
        "unk" => repeat_to("\u{1F600}\u{0300}\u{200D} ", MIB),
        other => {
            eprintln!("unknown input {other}");
            std::process::exit(1);
        }
    }
}

fn texts(input: &str, batch: usize) -> Vec<String> {
    if input == "mixed" {
        return (0..batch)
            .map(|i| {
                if i % 2 == 0 {
                    "short".into()
                } else {
                    text("long")
                }
            })
            .collect();
    }
    vec![text(input); batch]
}

fn summarize(values: impl Iterator<Item = f32>) -> String {
    let v: Vec<f32> = values.collect();
    let bad = v.iter().any(|x| !x.is_finite());
    let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:.4}")).collect();
    format!(
        "{}{} values, first [{}]",
        if bad { "NONFINITE " } else { "" },
        v.len(),
        head.join(", ")
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: hostile_arch embed|classify|rerank DIR [key=value ...]");
        std::process::exit(1);
    }
    let (kind, dir) = (args[1].as_str(), args[2].as_str());
    let mut options = TextOptions::default();
    let (mut input, mut batch) = ("basic".to_string(), 1usize);
    for arg in &args[3..] {
        let Some((k, v)) = arg.split_once('=') else {
            eprintln!("bad argument {arg}");
            std::process::exit(1);
        };
        match k {
            "engine" => {
                options.engine = match v {
                    "packed" => Engine::Packed,
                    "portable" => Engine::PackedPortable,
                    "padded" => Engine::Padded,
                    "candle" => Engine::Candle,
                    _ => Engine::Auto,
                }
            }
            "precision" => {
                options.precision = match v {
                    "bf16" => Precision::Bf16,
                    "int8" => Precision::Int8,
                    _ => Precision::F32,
                }
            }
            "input" => input = v.to_string(),
            "batch" => batch = v.parse().unwrap_or(1),
            "max_seq" => options.max_seq_length = v.parse().ok(),
            _ => {
                eprintln!("bad argument {arg}");
                std::process::exit(1);
            }
        }
    }
    let start = Instant::now();
    let loaded = |r: Result<(), String>| {
        if let Err(e) = r {
            println!("LoadError: {e}");
            std::process::exit(2);
        }
        eprintln!("loaded in {:.2?}", start.elapsed());
    };
    let input_err = |e: modelhost::error::InputError| -> ! {
        println!("InputError: {e}");
        std::process::exit(3);
    };
    let runtime_err = |e: modelhost::error::RuntimeError| -> ! {
        println!("RuntimeError: {e}");
        std::process::exit(4);
    };
    match kind {
        "embed" => {
            let m = SentenceEmbedder::load_with(dir, options);
            loaded(m.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            let m = m.unwrap();
            let tokens: Vec<_> = texts(&input, batch)
                .iter()
                .map(|t| m.tokenize(t).unwrap_or_else(|e| input_err(e)))
                .collect();
            let lens: Vec<usize> = tokens.iter().map(|t| t.tokens().len()).collect();
            let out = m.embed_batch(&tokens).unwrap_or_else(|e| runtime_err(e));
            println!(
                "ok: max_seq {} tokens {:?} {}",
                m.max_seq_length(),
                &lens[..lens.len().min(3)],
                summarize(out.iter().flat_map(|e| e.as_slice().to_vec()))
            );
        }
        "classify" => {
            let m = TextClassifier::load_with(dir, options);
            loaded(m.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            let m = m.unwrap();
            let tokens: Vec<_> = texts(&input, batch)
                .iter()
                .map(|t| m.tokenize(t).unwrap_or_else(|e| input_err(e)))
                .collect();
            let lens: Vec<usize> = tokens.iter().map(|t| t.len()).collect();
            let out = m.classify_batch(&tokens).unwrap_or_else(|e| runtime_err(e));
            println!(
                "ok: max_seq {} labels {} tokens {:?} {}",
                m.max_seq_length(),
                m.labels().len(),
                &lens[..lens.len().min(3)],
                summarize(out.iter().flat_map(|c| c.scores.clone()))
            );
        }
        "rerank" => {
            let m = CrossEncoder::load_with(dir, options);
            loaded(m.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            let m = m.unwrap();
            let pairs: Vec<_> = texts(&input, batch)
                .into_iter()
                .map(|t| TextPair::new(t.clone(), t))
                .collect();
            let tokens: Vec<_> = pairs
                .iter()
                .map(|p| m.tokenize(p).unwrap_or_else(|e| input_err(e)))
                .collect();
            let lens: Vec<usize> = tokens.iter().map(|t| t.len()).collect();
            let out = m.score_batch(&tokens).unwrap_or_else(|e| runtime_err(e));
            println!(
                "ok: max_seq {} tokens {:?} {}",
                m.max_seq_length(),
                &lens[..lens.len().min(3)],
                summarize(out.iter().map(|r| r.logit))
            );
        }
        _ => {
            eprintln!("KIND is embed, classify or rerank");
            std::process::exit(1);
        }
    }
}
