//! The schema of a tabular model (`tabular.json`): features, task and network, the
//! schema's own checks, and the validation and encoding of rows against it.

use serde::{Deserialize, Serialize};

use super::row::{FeatureValue, TabularRow};
use crate::error::InputError;
use crate::models::mlp::MlpConfig;

/// A feature of the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    /// The feature's name, as rows give it.
    pub name: String,
    /// Its type, range and encoding.
    #[serde(flatten)]
    pub kind: FeatureKind,
    /// Used when a row leaves the feature out; `None` makes the feature required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<FeatureValue>,
}

/// A feature's type and how it is encoded for the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeatureKind {
    /// A real number in `[min, max]`, standardised as `(x - mean) / std`.
    Number {
        /// Smallest allowed value (default: no bound).
        #[serde(default = "neg_inf", skip_serializing_if = "is_neg_inf")]
        min: f64,
        /// Largest allowed value (default: no bound).
        #[serde(default = "pos_inf", skip_serializing_if = "is_pos_inf")]
        max: f64,
        /// The training mean.
        mean: f64,
        /// The training standard deviation (> 0).
        std: f64,
    },
    /// A whole number in `[min, max]`, standardised like a number.
    Integer {
        /// Smallest allowed value (default: no bound).
        #[serde(default = "neg_inf", skip_serializing_if = "is_neg_inf")]
        min: f64,
        /// Largest allowed value (default: no bound).
        #[serde(default = "pos_inf", skip_serializing_if = "is_pos_inf")]
        max: f64,
        /// The training mean.
        mean: f64,
        /// The training standard deviation (> 0).
        std: f64,
    },
    /// `true` or `false`, encoded 1 or 0.
    Boolean,
    /// One of `values`, encoded one-hot in that order.
    Category {
        /// The categories.
        values: Vec<String>,
    },
}

/// A numeric feature's bounds and standardisation: the fields `Number` and `Integer` share.
#[derive(Debug, Clone, Copy)]
pub(super) struct Numeric {
    pub(super) min: f64,
    pub(super) max: f64,
    pub(super) mean: f64,
    pub(super) std: f64,
    pub(super) integer: bool,
}

impl FeatureKind {
    /// The bounds and standardisation of a `Number` or `Integer` feature.
    pub(super) fn numeric(&self) -> Option<Numeric> {
        match *self {
            FeatureKind::Number {
                min,
                max,
                mean,
                std,
            }
            | FeatureKind::Integer {
                min,
                max,
                mean,
                std,
            } => Some(Numeric {
                min,
                max,
                mean,
                std,
                integer: matches!(self, FeatureKind::Integer { .. }),
            }),
            FeatureKind::Boolean | FeatureKind::Category { .. } => None,
        }
    }
}

fn neg_inf() -> f64 {
    f64::NEG_INFINITY
}

fn pos_inf() -> f64 {
    f64::INFINITY
}

fn is_neg_inf(v: &f64) -> bool {
    *v == f64::NEG_INFINITY
}

fn is_pos_inf(v: &f64) -> bool {
    *v == f64::INFINITY
}

impl FeatureKind {
    /// Columns the feature takes in the encoded vector.
    fn width(&self) -> usize {
        match self {
            FeatureKind::Category { values } => values.len(),
            _ => 1,
        }
    }
}

/// What the model predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Task {
    /// One of `labels` (softmax over one output per label).
    Classification {
        /// The class labels, in output order.
        labels: Vec<String>,
    },
    /// A number: the network's one output, de-standardised as `y * std + mean`.
    Regression {
        /// The target's name (for the signature).
        target: String,
        /// The training mean of the target.
        #[serde(default)]
        mean: f64,
        /// The training standard deviation of the target.
        #[serde(default = "one")]
        std: f64,
    },
}

fn one() -> f64 {
    1.0
}

/// `tabular.json`: the schema, the task and the network of a [`TabularModel`](super::TabularModel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TabularConfig {
    /// The features, in the order they are encoded.
    pub features: Vec<Feature>,
    /// What is predicted.
    pub task: Task,
    /// Widths of the hidden layers (ReLU after each); empty for a linear model.
    #[serde(default)]
    pub hidden: Vec<usize>,
}

impl TabularConfig {
    /// The width of the encoded feature vector.
    pub fn encoded_width(&self) -> usize {
        self.features.iter().map(|f| f.kind.width()).sum()
    }

    /// The network's outputs.
    pub fn outputs(&self) -> usize {
        match &self.task {
            Task::Classification { labels } => labels.len(),
            Task::Regression { .. } => 1,
        }
    }

    /// The [`MlpConfig`] of the network (what `Mlp::new` builds and training uses).
    pub fn network(&self) -> MlpConfig {
        let labels = match &self.task {
            Task::Classification { labels } => labels.clone(),
            Task::Regression { target, .. } => vec![target.clone()],
        };
        MlpConfig {
            input_name: "features".into(),
            input_dim: self.encoded_width(),
            input_min: f32::MIN,
            input_max: f32::MAX,
            input_scale: 1.0,
            hidden: self.hidden.clone(),
            labels,
        }
    }

    /// Validates a row against the schema and encodes it for the network: standardised
    /// numbers, 0/1 booleans and one-hot categories, in schema order; a feature the row
    /// leaves out takes its default. Training and serving share this one encoding.
    pub fn encode(&self, row: &TabularRow) -> Result<Vec<f32>, InputError> {
        if let Some(name) = row
            .0
            .keys()
            .find(|k| !self.features.iter().any(|f| &f.name == *k))
        {
            return Err(InputError::Unexpected {
                field: name.clone(),
                allowed: self.features.iter().map(|f| f.name.clone()).collect(),
            });
        }
        let mut out = Vec::with_capacity(self.encoded_width());
        for f in &self.features {
            let value =
                row.0
                    .get(&f.name)
                    .or(f.default.as_ref())
                    .ok_or_else(|| InputError::Missing {
                        field: f.name.clone(),
                    })?;
            encode(f, value, &mut out)?;
        }
        Ok(out)
    }

    /// Checks the schema; the message says what is wrong and what is allowed.
    pub(super) fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        if self.features.is_empty() {
            return Err("there are no features; declare at least one".into());
        }
        for f in &self.features {
            if !seen.insert(f.name.as_str()) {
                return Err(format!("feature `{}` is declared twice", f.name));
            }
            if let Some(Numeric {
                min,
                max,
                mean,
                std,
                integer,
            }) = f.kind.numeric()
            {
                if min.is_nan() || max.is_nan() || min > max {
                    return Err(format!("feature `{}`: min must be <= max", f.name));
                }
                if integer && min.ceil() > max.floor() {
                    return Err(format!(
                        "integer feature `{}`: no whole number lies in [{min}, {max}]",
                        f.name
                    ));
                }
                if !mean.is_finite() || !std.is_finite() || std <= 0.0 {
                    return Err(format!(
                        "feature `{}`: mean must be finite and std a finite number > 0",
                        f.name
                    ));
                }
            }
            if let FeatureKind::Category { values } = &f.kind {
                let unique: std::collections::HashSet<_> = values.iter().collect();
                if values.is_empty() || unique.len() != values.len() {
                    return Err(format!(
                        "feature `{}`: categories must be a non-empty list without repeats",
                        f.name
                    ));
                }
            }
            if let Some(default) = &f.default {
                let mut out = Vec::new();
                encode(f, default, &mut out)
                    .map_err(|e| format!("the default of feature `{}` is refused: {e}", f.name))?;
            }
        }
        match &self.task {
            Task::Classification { labels } if labels.len() < 2 => Err(
                "a classification task needs at least two labels (softmax over one output is always 1; a binary model has two)".into(),
            ),
            Task::Regression { mean, std, .. }
                if !mean.is_finite() || !std.is_finite() || *std <= 0.0 =>
            {
                Err("the regression target's mean must be finite and std > 0".into())
            }
            _ if self.hidden.contains(&0) => Err("hidden layer widths must be at least 1".into()),
            _ => Ok(()),
        }
    }
}

/// Validates `value` for feature `f` and appends its encoding to `out`.
fn encode(f: &Feature, value: &FeatureValue, out: &mut Vec<f32>) -> Result<(), InputError> {
    let wrong = |expected: &str| InputError::WrongType {
        field: f.name.clone(),
        expected: expected.into(),
        got: value.describe(),
    };
    if let Some(n) = f.kind.numeric() {
        let whole = if n.integer {
            "a whole number"
        } else {
            "a number"
        };
        let FeatureValue::Number(x) = *value else {
            return Err(wrong(whole));
        };
        let out_of_range = || InputError::FeatureOutOfRange {
            field: f.name.clone(),
            value: x,
            min: n.min,
            max: n.max,
        };
        if !x.is_finite() || x < n.min || x > n.max {
            return Err(out_of_range());
        }
        if n.integer && x.fract() != 0.0 {
            return Err(wrong(whole));
        }
        // Without declared bounds a huge value would standardise to infinity in f32.
        let z = ((x - n.mean) / n.std) as f32;
        if !z.is_finite() {
            return Err(out_of_range());
        }
        out.push(z);
        return Ok(());
    }
    match (&f.kind, value) {
        (FeatureKind::Boolean, FeatureValue::Bool(b)) => out.push(f32::from(u8::from(*b))),
        (FeatureKind::Category { values }, FeatureValue::Text(t)) => {
            let Some(at) = values.iter().position(|v| v == t) else {
                return Err(InputError::UnknownCategory {
                    field: f.name.clone(),
                    value: t.clone(),
                    allowed: values.clone(),
                });
            };
            out.extend((0..values.len()).map(|i| f32::from(u8::from(i == at))));
        }
        (FeatureKind::Category { values }, _) => {
            return Err(wrong(&format!("one of the texts {}", values.join(", "))));
        }
        // A boolean feature given anything else (numeric kinds returned above).
        _ => return Err(wrong("true or false")),
    }
    Ok(())
}
