//! Full-batch training of an [`Mlp`] with AdamW and cross-entropy, shared by the
//! `train_*` examples, printing loss and accuracy every 50 epochs.

use candle_core::{DType, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap, loss};
use modelhost::models::mlp::Mlp;

/// The `train_*` examples' arguments: `[--epochs N] [--out DIR]`, by default 300 epochs
/// written to `default_out`.
pub fn args(
    default_out: std::path::PathBuf,
) -> Result<(usize, std::path::PathBuf), Box<dyn std::error::Error>> {
    let (mut epochs, mut out) = (300usize, default_out);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--epochs" => epochs = args.next().ok_or("--epochs needs a value")?.parse()?,
            "--out" => out = args.next().ok_or("--out needs a value")?.into(),
            other => {
                return Err(
                    format!("unknown argument {other}; expected --epochs N or --out DIR").into(),
                );
            }
        }
    }
    Ok((epochs, out))
}

/// The share of rows of `x` whose predicted class is `y`.
pub fn accuracy(mlp: &Mlp, x: &Tensor, y: &Tensor) -> candle_core::Result<f32> {
    let predicted = mlp.forward(x)?.argmax(1)?;
    let correct = predicted
        .eq(y)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(correct / y.dims1()? as f32)
}

/// Trains every variable of `varmap` for `epochs` full-batch steps.
pub fn fit(
    mlp: &Mlp,
    varmap: &VarMap,
    (train_x, train_y): (&Tensor, &Tensor),
    (test_x, test_y): (&Tensor, &Tensor),
    epochs: usize,
    params: ParamsAdamW,
) -> candle_core::Result<()> {
    let mut opt = AdamW::new(varmap.all_vars(), params)?;
    for epoch in 1..=epochs {
        let loss = loss::cross_entropy(&mlp.forward(train_x)?, train_y)?;
        opt.backward_step(&loss)?;
        if epoch % 50 == 0 || epoch == epochs {
            println!(
                "epoch {epoch:4}  loss {:.4}  train acc {:.3}  held-back acc {:.3}",
                loss.to_scalar::<f32>()?,
                accuracy(mlp, train_x, train_y)?,
                accuracy(mlp, test_x, test_y)?
            );
        }
    }
    Ok(())
}
