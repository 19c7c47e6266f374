//! The 8×8 handwritten digits data set (1,797 images, from scikit-learn's wheel) and the
//! fixed split shared by `train_digits` and `quickstart`: every fifth image is held back.

use std::path::Path;

/// Images (64 grey levels in 0..=16, row by row) and their digit.
pub struct Digits {
    pub images: Vec<Vec<f32>>,
    pub labels: Vec<u32>,
}

/// Reads `digits.csv`: 64 pixel values then the label on each line.
pub fn load(path: &Path) -> Result<Digits, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut digits = Digits {
        images: Vec::new(),
        labels: Vec::new(),
    };
    for (n, line) in text.lines().enumerate() {
        let values: Vec<f32> = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        if values.len() != 65 {
            return Err(format!(
                "{}:{}: expected 65 values, got {}",
                path.display(),
                n + 1,
                values.len()
            )
            .into());
        }
        digits.labels.push(values[64] as u32);
        digits.images.push(values[..64].to_vec());
    }
    Ok(digits)
}

/// True for the images held back from training.
pub fn held_back(index: usize) -> bool {
    index % 5 == 4
}

/// (training, held back) halves of the data set.
pub fn split(digits: Digits) -> (Digits, Digits) {
    let mut train = Digits {
        images: Vec::new(),
        labels: Vec::new(),
    };
    let mut test = Digits {
        images: Vec::new(),
        labels: Vec::new(),
    };
    for (i, (image, label)) in digits.images.into_iter().zip(digits.labels).enumerate() {
        let part = if held_back(i) { &mut test } else { &mut train };
        part.images.push(image);
        part.labels.push(label);
    }
    (train, test)
}

/// The directory of the shipped model and its data.
pub fn assets() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/assets/digits")
}
