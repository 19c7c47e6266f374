//! The wine recognition data set (178 wines from three cultivars, 13 chemical measurements;
//! from scikit-learn's wheel) and the fixed split shared by `train_wine`, `tabular` and the
//! tests: every fifth wine is held back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use modelhost::{models::tabular::FeatureValue, models::tabular::TabularRow};

/// `examples/assets/wine`.
pub fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/assets/wine")
}

/// The feature names, in file order.
pub fn feature_names() -> Vec<String> {
    let text = std::fs::read_to_string(assets().join("wine.csv")).expect("wine.csv");
    let header = text.lines().next().unwrap_or_default();
    let mut names: Vec<String> = header.split(',').map(str::to_string).collect();
    names.pop(); // the class
    names
}

/// Every wine as a row of named features and its class (0, 1 or 2).
pub fn load() -> Result<Vec<(TabularRow, usize)>, Box<dyn std::error::Error>> {
    let path = assets().join("wine.csv");
    let text = std::fs::read_to_string(&path)?;
    let names = feature_names();
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let values: Vec<f64> = line
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        if values.len() != names.len() + 1 {
            return Err(format!(
                "{}:{}: expected {} values",
                path.display(),
                n + 1,
                names.len() + 1
            )
            .into());
        }
        let row = names
            .iter()
            .zip(&values)
            .map(|(k, v)| (k.clone(), FeatureValue::Number(*v)))
            .collect();
        rows.push((TabularRow(row), values[names.len()] as usize));
    }
    Ok(rows)
}

/// True for the wines held back from training.
pub fn held_back(index: usize) -> bool {
    index % 5 == 4
}
