//! A command-line embedder: one text per line in, one JSON object per line out.
//!
//! ```text
//! cargo run --release --example embed -- --model DIR|ORG/NAME[@REV] [--input FILE] [--output FILE]
//!     [--max-batch-size 32] [--no-truncate] [--engine packed|portable|padded|candle] [--threads N]
//!     [--precision f32|bf16|int8]
//!     [--prompt-name NAME] [--truncate-dim N]
//! ```
//!
//! Reads stdin when there is no `--input` and writes stdout when there is no `--output`.
//! Each output line is `{"embedding": [...]}`, in input order; a line that fails (the
//! model refuses it, it is not valid UTF-8, or it is over 16 MiB) gets
//! `{"error": "..."}` on its own line and the rest go on. Empty lines are embedded like any
//! text. `--no-truncate` refuses texts over the model's `max_seq_length` instead of cutting
//! them. `--engine padded` runs modelhost's encoder on padded batches (as transformers does)
//! and `--engine candle` candle-transformers' stock BERT, instead of the default
//! padding-free encoder; `--threads` sets the encoder's threads (default:
//! `RAYON_NUM_THREADS`, else one per core). `--prompt-name` embeds every text with one of
//! the model's prompts (`config_sentence_transformers.json`) instead of its default one;
//! `--truncate-dim` keeps the first N dimensions (Matryoshka models). Built with
//! `--features hub`, `--model org/name[@revision]` (when no such path exists) loads from the
//! Hugging Face Hub into its cache (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE` apply).

#[path = "common/model.rs"]
mod model;

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use modelhost::{
    Predictor, models::text::EmbedderOptions, models::text::Engine, models::text::Precision,
};

const USAGE: &str = "usage: embed --model DIR|ORG/NAME[@REV] [--input FILE] [--output FILE] [--max-batch-size N] [--no-truncate] [--engine packed|portable|padded|candle] [--threads N] [--precision f32|bf16|int8] [--prompt-name NAME] [--truncate-dim N]";

/// Texts are submitted in chunks of this many lines so memory stays bounded on big inputs.
const CHUNK: usize = 1024;

/// The longest line kept, in bytes; a longer one gets an error row (the embedder itself
/// tokenizes at most its `max_input_bytes` of a line).
const MAX_LINE: usize = 16 << 20;

/// The next line of `input` without its `\n` (or `\r\n`), `None` at the end: `Ok` with the
/// text, or `Err` with the reason for an error row when it is not UTF-8 or is longer
/// than `max` bytes (then the rest of it is skipped, never held).
fn next_line(
    input: &mut dyn BufRead,
    max: usize,
) -> std::io::Result<Option<Result<String, String>>> {
    let (mut line, mut len, mut seen) = (Vec::new(), 0usize, false);
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        seen = true;
        let (part, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], true),
            None => (buf, false),
        };
        len += part.len();
        if len <= max {
            line.extend_from_slice(part);
        }
        let used = part.len() + usize::from(done);
        input.consume(used);
        if done {
            break;
        }
    }
    if !seen {
        return Ok(None);
    }
    if len > max {
        return Ok(Some(Err(format!(
            "the line is {len} bytes; at most {max} are read"
        ))));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8(line).map_err(|e| {
        format!(
            "the line is not valid UTF-8 (invalid byte at offset {}); texts must be UTF-8",
            e.utf8_error().valid_up_to()
        )
    })))
}

struct Args {
    model: String,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    max_batch_size: usize,
    truncate: bool,
    engine: Engine,
    threads: Option<usize>,
    precision: Precision,
    prompt_name: Option<String>,
    truncate_dim: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut model = None;
    let mut args = Args {
        model: String::new(),
        input: None,
        output: None,
        max_batch_size: 32,
        truncate: true,
        engine: Engine::Auto,
        threads: None,
        precision: Precision::F32,
        prompt_name: None,
        truncate_dim: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--model" => model = Some(value()?),
            "--input" => args.input = Some(PathBuf::from(value()?)),
            "--output" => args.output = Some(PathBuf::from(value()?)),
            "--max-batch-size" => {
                args.max_batch_size = value()?
                    .parse()
                    .map_err(|e| format!("--max-batch-size: {e}"))?
            }
            "--no-truncate" => args.truncate = false,
            "--engine" => {
                args.engine = match value()?.as_str() {
                    "packed" => Engine::Packed,
                    "candle" => Engine::Candle,
                    "portable" => Engine::PackedPortable,
                    "padded" => Engine::Padded,
                    other => {
                        return Err(format!(
                            "--engine {other}: use packed, portable, padded or candle"
                        ));
                    }
                }
            }
            "--threads" => {
                args.threads = Some(value()?.parse().map_err(|e| format!("--threads: {e}"))?)
            }
            "--precision" => args.precision = value()?.parse()?,
            "--prompt-name" => args.prompt_name = Some(value()?),
            "--truncate-dim" => {
                args.truncate_dim = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--truncate-dim: {e}"))?,
                )
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    args.model = model.ok_or(format!("--model is required\n{USAGE}"))?;
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let options = EmbedderOptions {
        truncate: args.truncate,
        engine: args.engine,
        threads: args.threads,
        precision: args.precision,
        prompt_name: args.prompt_name,
        truncate_dim: args.truncate_dim,
        ..EmbedderOptions::default()
    };
    let embedder = model::load_embedder(&args.model, options)?;
    let predictor = Predictor::builder(embedder)
        .max_batch_size(args.max_batch_size)
        .build()?;

    let input: Box<dyn BufRead> = match &args.input {
        Some(path) => Box::new(BufReader::new(std::fs::File::open(path)?)),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut output: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(std::fs::File::create(path)?)),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };

    let mut input = input;
    loop {
        let mut chunk = Vec::new();
        while chunk.len() < CHUNK {
            match next_line(&mut *input, MAX_LINE)? {
                Some(line) => chunk.push(line),
                None => break,
            }
        }
        if chunk.is_empty() {
            break;
        }
        let texts: Vec<String> = chunk
            .iter()
            .filter_map(|l| l.as_ref().ok())
            .cloned()
            .collect();
        let mut answers = predictor.predict_many(texts).into_iter();
        for line in chunk {
            let row = match line.map(|_| answers.next()) {
                Ok(Some(Ok(embedding))) => serde_json::json!({ "embedding": embedding.as_slice() }),
                Ok(Some(Err(error))) => serde_json::json!({ "error": error.to_string() }),
                Ok(None) => serde_json::json!({ "error": "no answer for this line" }),
                Err(reason) => serde_json::json!({ "error": reason }),
            };
            serde_json::to_writer(&mut output, &row)?;
            output.write_all(b"\n")?;
        }
    }
    output.flush()?;
    Ok(())
}
