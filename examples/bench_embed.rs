//! Load generator for the sentence embedder: prints one JSON line per run.
//!
//! ```text
//! cargo run --release --example bench_embed -- --model DIR|ORG/NAME[@REV] --corpus FILE [--n 1024]
//!     [--concurrency 32] [--max-batch-size 32] [--max-delay-ms 2] [--grouping arrival|length]
//!     [--engine packed|portable|padded|candle] [--threads T] [--direct] [--warmup 32] [--no-instrument]
//!     [--device cpu|cuda[:N]] [--dtype f32|f16|bf16] [--precision f32|bf16|int8]
//! ```
//!
//! `--concurrency C`: C caller threads, each sending one text at a time through a
//! `Predictor` until the first N texts of the corpus are embedded. `--direct` skips the
//! predictor: it sorts the N texts by token count and runs the model on consecutive batches
//! of `--max-batch-size` itself — the best a static batcher can do — and reports
//! `"concurrency":0`. Latencies are per request (per batch with `--direct`).
//!
//! Output: `{"concurrency":C,"n":N,"sent_per_s":..,"p50_ms":..,"p99_ms":..,"mean_batch":..,
//! "engine":..,"max_batch_size":..,"grouping":..,"threads":..,"instrument":..,"device":..,"dtype":..,
//! "precision":..,"isa":..}`.

#[path = "common/model.rs"]
mod model;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use modelhost::{
    Predictor, batch::Grouping, models::text::EmbedderOptions, models::text::Engine,
    models::text::Precision,
};

const USAGE: &str = "usage: bench_embed --model DIR|ORG/NAME[@REV] --corpus FILE [--n N] [--concurrency C] [--max-batch-size B] [--max-delay-ms D] [--grouping arrival|length] [--engine packed|portable|padded|candle] [--threads T] [--direct] [--warmup W] [--no-instrument] [--device cpu|cuda[:N]] [--dtype f32|f16|bf16] [--precision f32|bf16|int8]";

struct Args {
    model: String,
    corpus: PathBuf,
    n: usize,
    concurrency: usize,
    max_batch_size: usize,
    max_delay_ms: f64,
    grouping: Grouping,
    engine: Engine,
    threads: Option<usize>,
    direct: bool,
    warmup: usize,
    instrument: bool,
    device: String,
    dtype: modelhost::DType,
    precision: Precision,
}

fn parse_args() -> Result<Args, String> {
    let mut model = None;
    let mut corpus = None;
    let mut a = Args {
        model: String::new(),
        corpus: PathBuf::new(),
        n: 1024,
        concurrency: 32,
        max_batch_size: 32,
        max_delay_ms: 2.0,
        grouping: Grouping::Arrival,
        engine: Engine::Packed,
        threads: None,
        direct: false,
        warmup: 32,
        instrument: true,
        device: "cpu".into(),
        dtype: modelhost::DType::F32,
        precision: Precision::F32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
        match arg.as_str() {
            "--model" => model = Some(value()?),
            "--corpus" => corpus = Some(PathBuf::from(value()?)),
            "--n" => a.n = num(value()?)?,
            "--concurrency" => a.concurrency = num(value()?)?,
            "--max-batch-size" => a.max_batch_size = num(value()?)?,
            "--max-delay-ms" => {
                let v = value()?;
                a.max_delay_ms = v.parse().map_err(|e| format!("{v}: {e}"))?
            }
            "--grouping" => {
                a.grouping = match value()?.as_str() {
                    "arrival" => Grouping::Arrival,
                    "length" => Grouping::Length,
                    other => return Err(format!("--grouping {other}: use arrival or length")),
                }
            }
            "--engine" => {
                a.engine = match value()?.as_str() {
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
            "--threads" => a.threads = Some(num(value()?)?),
            "--direct" => a.direct = true,
            "--no-instrument" => a.instrument = false,
            "--warmup" => a.warmup = num(value()?)?,
            "--device" => a.device = value()?,
            "--dtype" => {
                a.dtype = match value()?.as_str() {
                    "f32" => modelhost::DType::F32,
                    "f16" => modelhost::DType::F16,
                    "bf16" => modelhost::DType::BF16,
                    other => return Err(format!("--dtype {other}: use f32, f16 or bf16")),
                }
            }
            "--precision" => a.precision = value()?.parse()?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    a.model = model.ok_or(format!("--model is required\n{USAGE}"))?;
    a.corpus = corpus.ok_or(format!("--corpus is required\n{USAGE}"))?;
    if a.concurrency == 0 || a.max_batch_size == 0 || a.n == 0 {
        return Err("--n, --concurrency and --max-batch-size must be at least 1".into());
    }
    Ok(a)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let texts: Vec<String> = std::fs::read_to_string(&args.corpus)?
        .lines()
        .take(args.n)
        .map(str::to_owned)
        .collect();
    let n = texts.len();
    let device = match args.device.as_str() {
        "cpu" => modelhost::Device::Cpu,
        cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
            let ordinal = cuda
                .strip_prefix("cuda:")
                .map_or(Ok(0), str::parse)
                .map_err(|e| format!("--device {cuda}: {e}"))?;
            modelhost::Device::new_cuda(ordinal)?
        }
        other => return Err(format!("--device {other}: use cpu or cuda[:N]").into()),
    };
    let options = EmbedderOptions {
        engine: args.engine,
        threads: args.threads,
        device,
        dtype: args.dtype,
        precision: args.precision,
        ..EmbedderOptions::default()
    };
    let embedder = model::load_embedder(&args.model, options)?;
    let info = embedder.engine_info();
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    let engine = match embedder.engine() {
        Engine::Candle => "candle",
        Engine::PackedPortable => "portable",
        Engine::Padded => "padded",
        _ => "packed",
    };

    let (seconds, mut latencies_ms, mean_batch, concurrency) = if args.direct {
        let mut tokenized: Vec<_> = texts
            .iter()
            .map(|t| embedder.tokenize(t))
            .collect::<Result<_, _>>()?;
        tokenized.sort_by_key(|t| t.len());
        for chunk in tokenized
            .chunks(args.max_batch_size)
            .take(args.warmup.div_ceil(args.max_batch_size))
        {
            embedder.embed_batch(chunk)?;
        }
        let mut latencies = Vec::new();
        let start = Instant::now();
        for chunk in tokenized.chunks(args.max_batch_size) {
            let t = Instant::now();
            embedder.embed_batch(chunk)?;
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let seconds = start.elapsed().as_secs_f64();
        let batches = latencies.len();
        (seconds, latencies, n as f64 / batches as f64, 0)
    } else {
        let predictor = Predictor::builder(embedder)
            .max_batch_size(args.max_batch_size)
            .max_delay(Duration::from_secs_f64(args.max_delay_ms / 1e3))
            .grouping(args.grouping)
            .instrument(args.instrument)
            .queue_capacity(args.concurrency.max(1024))
            .build()?;
        for text in texts.iter().take(args.warmup) {
            predictor.predict(text.clone())?;
        }
        let before = predictor.stats();
        let next = AtomicUsize::new(0);
        let latencies = Mutex::new(Vec::with_capacity(n));
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..args.concurrency {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(text) = texts.get(i) else { break };
                        let t = Instant::now();
                        if let Err(e) = predictor.predict(text.clone()) {
                            eprintln!("text {i}: {e}");
                        }
                        mine.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    if let Ok(mut all) = latencies.lock() {
                        all.extend(mine);
                    }
                });
            }
        });
        let seconds = start.elapsed().as_secs_f64();
        let after = predictor.stats();
        let batches = after.batches - before.batches;
        let latencies = latencies.into_inner().unwrap_or_default();
        (
            seconds,
            latencies,
            n as f64 / batches.max(1) as f64,
            args.concurrency,
        )
    };
    latencies_ms.sort_by(f64::total_cmp);
    let line = serde_json::json!({
        "concurrency": concurrency,
        "n": n,
        "sent_per_s": (n as f64 / seconds * 10.0).round() / 10.0,
        "p50_ms": (percentile(&latencies_ms, 50.0) * 100.0).round() / 100.0,
        "p99_ms": (percentile(&latencies_ms, 99.0) * 100.0).round() / 100.0,
        "mean_batch": (mean_batch * 100.0).round() / 100.0,
        "engine": engine,
        "max_batch_size": args.max_batch_size,
        "grouping": match args.grouping { Grouping::Length => "length", _ => "arrival" },
        "threads": threads,
        "instrument": args.instrument,
        "device": args.device,
        "dtype": format!("{:?}", args.dtype).to_lowercase(),
        "precision": info.precision.name(),
        "isa": info.isa,
    });
    println!("{line}");
    Ok(())
}
