//! Trains the tabular wine classifier that the `tabular` example and the tests serve:
//! multinomial logistic regression on 13 standardised measurements, with candle-nn.
//!
//! ```text
//! cargo run --release --example train_wine [-- --epochs 300 --out examples/assets/wine]
//! ```
//!
//! Every fifth wine is held back. The schema (`tabular.json`) records each feature's
//! training mean and standard deviation, and accepts values from 0 to 1.5× the largest
//! seen, so a row far outside what the model knows is refused instead of extrapolated.

#[path = "common/fit.rs"]
mod fit;
#[path = "common/wine.rs"]
mod wine;

use candle_core::{DType, Device, Tensor};
use candle_nn::{ParamsAdamW, VarBuilder, VarMap};
use modelhost::{
    models::mlp::Mlp, models::tabular::Feature, models::tabular::FeatureKind,
    models::tabular::FeatureValue, models::tabular::TabularConfig, models::tabular::TabularRow,
    models::tabular::Task,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (epochs, out) = fit::args(wine::assets())?;

    let rows = wine::load()?;
    let names = wine::feature_names();
    let train: Vec<_> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| !wine::held_back(*i))
        .map(|(_, r)| r)
        .collect();
    let number = |row: &TabularRow, name: &str| match row.0.get(name) {
        Some(FeatureValue::Number(v)) => *v,
        _ => f64::NAN,
    };
    let features = names
        .iter()
        .map(|name| {
            let values: Vec<f64> = train.iter().map(|(r, _)| number(r, name)).collect();
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            let max = values.iter().copied().fold(f64::MIN, f64::max);
            Feature {
                name: name.clone(),
                kind: FeatureKind::Number {
                    min: 0.0,
                    max: (max * 1.5 * 100.0).ceil() / 100.0,
                    mean,
                    std,
                },
                default: None,
            }
        })
        .collect();
    let config = TabularConfig {
        features,
        task: Task::Classification {
            labels: vec!["class_0".into(), "class_1".into(), "class_2".into()],
        },
        hidden: vec![],
    };

    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("tabular.json"),
        serde_json::to_string_pretty(&config)? + "\n",
    )?;
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let mlp = Mlp::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
        &config.network(),
    )?;
    // Logistic regression starts from zero, so the run is deterministic. The rows are
    // encoded by the schema itself, exactly as serving will encode them.
    for var in varmap.all_vars() {
        var.set(&var.zeros_like()?)?;
    }
    let encode =
        |subset: &[(TabularRow, usize)]| -> Result<(Tensor, Tensor), Box<dyn std::error::Error>> {
            let mut flat = Vec::with_capacity(subset.len() * config.encoded_width());
            for (row, _) in subset {
                flat.extend(config.encode(row)?);
            }
            let labels: Vec<u32> = subset.iter().map(|(_, c)| *c as u32).collect();
            Ok((
                Tensor::from_vec(flat, (subset.len(), config.encoded_width()), &device)?,
                Tensor::from_vec(labels, subset.len(), &device)?,
            ))
        };
    let (train_rows, test_rows): (Vec<_>, Vec<_>) = rows
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| !wine::held_back(*i));
    let strip = |v: Vec<(usize, (TabularRow, usize))>| -> Vec<_> {
        v.into_iter().map(|(_, r)| r).collect()
    };
    let (train_x, train_y) = encode(&strip(train_rows))?;
    let (test_x, test_y) = encode(&strip(test_rows))?;

    fit::fit(
        &mlp,
        &varmap,
        (&train_x, &train_y),
        (&test_x, &test_y),
        epochs,
        ParamsAdamW {
            lr: 0.05,
            weight_decay: 1e-3,
            ..ParamsAdamW::default()
        },
    )?;
    varmap.save(out.join("model.safetensors"))?;
    println!(
        "saved {} ({} train / {} held-back wines)",
        out.display(),
        train_y.dims1()?,
        test_y.dims1()?
    );
    Ok(())
}
