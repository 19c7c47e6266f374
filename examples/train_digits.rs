//! Trains the small digits classifier that the quickstart serves, with candle-nn.
//!
//! ```text
//! cargo run --release --example train_digits [-- --epochs 300 --out examples/assets/digits]
//! ```
//!
//! Data: scikit-learn's 8×8 handwritten digits (`examples/assets/digits/digits.csv`); every
//! fifth image is held back for evaluation. Writes `model.safetensors` and `model.json`
//! (an [`MlpConfig`]) that [`MlpClassifier::load`](modelhost::models::mlp::MlpClassifier::load) reads.

#[path = "common/digits.rs"]
mod digits;
#[path = "common/fit.rs"]
mod fit;

use candle_core::{DType, Device, Tensor};
use candle_nn::{ParamsAdamW, VarBuilder, VarMap};
use modelhost::{models::mlp::Mlp, models::mlp::MlpConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (epochs, out) = fit::args(digits::assets())?;

    let data = digits::load(&digits::assets().join("digits.csv"))?;
    let (train, test) = digits::split(data);
    let config = MlpConfig {
        input_name: "pixels".into(),
        input_dim: 64,
        input_min: 0.0,
        input_max: 16.0,
        input_scale: 1.0 / 16.0,
        hidden: vec![64],
        labels: (0..10).map(|d| d.to_string()).collect(),
    };

    let device = Device::Cpu;
    let to_tensor = |d: &digits::Digits| -> candle_core::Result<(Tensor, Tensor)> {
        let flat: Vec<f32> = d
            .images
            .iter()
            .flatten()
            .map(|v| v * config.input_scale)
            .collect();
        let x = Tensor::from_vec(flat, (d.images.len(), config.input_dim), &device)?;
        let y = Tensor::from_vec(d.labels.clone(), d.labels.len(), &device)?;
        Ok((x, y))
    };
    let (train_x, train_y) = to_tensor(&train)?;
    let (test_x, test_y) = to_tensor(&test)?;

    let varmap = VarMap::new();
    let mlp = Mlp::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
        &config,
    )?;
    reseed(&varmap, 42)?;
    fit::fit(
        &mlp,
        &varmap,
        (&train_x, &train_y),
        (&test_x, &test_y),
        epochs,
        ParamsAdamW {
            lr: 0.01,
            weight_decay: 1e-4,
            ..ParamsAdamW::default()
        },
    )?;

    std::fs::create_dir_all(&out)?;
    varmap.save(out.join("model.safetensors"))?;
    std::fs::write(
        out.join("model.json"),
        serde_json::to_string_pretty(&config)? + "\n",
    )?;
    println!(
        "saved {} ({} train / {} held-back images)",
        out.display(),
        train.labels.len(),
        test.labels.len()
    );
    Ok(())
}

/// Re-initialises every weight from a fixed seed (candle's CPU device cannot be seeded), with
/// the same uniform ±1/sqrt(fan_in) range candle-nn's `linear` uses, so a run is repeatable.
fn reseed(varmap: &VarMap, seed: u64) -> candle_core::Result<()> {
    let mut state = seed;
    let mut next = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32
    };
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("the variable map's lock is poisoned".into()))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let dims = var.dims().to_vec();
        // A bias takes the fan-in of its layer's weight, `[out, in]`.
        let weight = name.replace(".bias", ".weight");
        let fan_in = vars
            .get(&weight)
            .map_or(1, |w| w.dims()[w.dims().len() - 1]);
        let bound = 1.0 / (fan_in as f32).sqrt();
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| (2.0 * next() - 1.0) * bound)
            .collect();
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}
