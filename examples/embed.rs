//! A command-line embedder: one text per line in, one JSON object per line out.
//!
//! ```text
//! cargo run --release --example embed -- --model DIR [--input FILE] [--output FILE]
//!     [--max-batch-size 32] [--no-truncate] [--engine packed|portable|candle] [--threads N]
//! ```
//!
//! Reads stdin when there is no `--input` and writes stdout when there is no `--output`.
//! Each output line is `{"embedding": [...]}`, in input order; a line that fails gets
//! `{"error": "..."}` on its own line and the rest go on. Empty lines are embedded like any
//! text. `--no-truncate` refuses texts over the model's `max_seq_length` instead of cutting
//! them. `--engine candle` runs candle-transformers' stock BERT on padded batches instead of
//! the default padding-free encoder; `--threads` sets the encoder's threads (default:
//! `RAYON_NUM_THREADS`, else one per core).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use modelhost::{
    Predictor, models::sentence::SentenceEmbedder, models::text::EmbedderOptions,
    models::text::Engine,
};

const USAGE: &str =
    "usage: embed --model DIR [--input FILE] [--output FILE] [--max-batch-size N] [--no-truncate]";

/// Texts are submitted in chunks of this many lines so memory stays bounded on big inputs.
const CHUNK: usize = 1024;

struct Args {
    model: PathBuf,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    max_batch_size: usize,
    truncate: bool,
    engine: Engine,
    threads: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut model = None;
    let mut args = Args {
        model: PathBuf::new(),
        input: None,
        output: None,
        max_batch_size: 32,
        truncate: true,
        engine: Engine::Auto,
        threads: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
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
                    other => {
                        return Err(format!("--engine {other}: use packed, portable or candle"));
                    }
                }
            }
            "--threads" => {
                args.threads = Some(value()?.parse().map_err(|e| format!("--threads: {e}"))?)
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
        ..EmbedderOptions::default()
    };
    let embedder = SentenceEmbedder::load_with(&args.model, options)?;
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

    let mut lines = input.lines();
    loop {
        let chunk: Vec<String> = lines.by_ref().take(CHUNK).collect::<Result<_, _>>()?;
        if chunk.is_empty() {
            break;
        }
        for answer in predictor.predict_many(chunk) {
            let line = match answer {
                Ok(embedding) => serde_json::json!({ "embedding": embedding.as_slice() }),
                Err(error) => serde_json::json!({ "error": error.to_string() }),
            };
            serde_json::to_writer(&mut output, &line)?;
            output.write_all(b"\n")?;
        }
    }
    output.flush()?;
    Ok(())
}
