//! The [`Model`] trait: what the predictor needs from a model, and nothing more.

use crate::error::{InputError, RuntimeError};

/// The result of running one batch: one entry per input, in input order.
///
/// An `Err` entry fails only its own request; a whole-batch failure is the outer `Err` of
/// [`Model::run_batch`].
pub type BatchOutputs<O> = Vec<Result<O, RuntimeError>>;

/// How the costs of a batch's inputs ([`Model::cost`]) add up to the batch's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BatchCost {
    /// The sum of the inputs' costs: an engine that computes real tokens only.
    #[default]
    Sum,
    /// The longest input's cost times the number of inputs: an engine that pads every input
    /// to the longest and computes the padding too.
    Padded,
}

impl BatchCost {
    /// The cost of a batch of `count` inputs whose costs sum to `sum`, the largest `longest`.
    pub fn of(self, count: usize, sum: usize, longest: usize) -> usize {
        match self {
            BatchCost::Sum => sum,
            BatchCost::Padded => longest.saturating_mul(count),
        }
    }
}

/// A model that a [`Predictor`](crate::Predictor) can serve.
///
/// The predictor calls [`prepare`](Model::prepare) on the caller's thread (validation and
/// preprocessing: tokenizing, decoding, normalising), queues the [`Prepared`](Model::Prepared)
/// value, and calls [`run_batch`](Model::run_batch) on its worker thread with as many prepared
/// inputs as the batching policy allows. A model never sees queues, caches or versions.
///
/// ```
/// use modelhost::{BatchOutputs, DataType, error::InputError, Model, error::RuntimeError, Signature, TensorSpec};
///
/// /// Doubles a number; rejects non-finite input.
/// struct Doubler;
///
/// impl Model for Doubler {
///     type Input = f32;
///     type Prepared = f32;
///     type Output = f32;
///
///     fn signature(&self) -> Signature {
///         Signature::new("doubler")
///             .input(TensorSpec::new("x", DataType::F32, [1]))
///             .output(TensorSpec::new("y", DataType::F32, [1]))
///     }
///
///     fn prepare(&self, x: f32) -> Result<f32, InputError> {
///         if x.is_finite() {
///             Ok(x)
///         } else {
///             Err(InputError::Invalid { field: "x".into(), reason: "must be finite".into() })
///         }
///     }
///
///     fn run_batch(&self, batch: &[f32]) -> Result<BatchOutputs<f32>, RuntimeError> {
///         Ok(batch.iter().map(|x| Ok(2.0 * x)).collect())
///     }
/// }
///
/// let predictor = modelhost::Predictor::builder(Doubler).build().unwrap();
/// assert_eq!(predictor.predict(21.0).unwrap(), 42.0);
/// ```
pub trait Model: Send + Sync + 'static {
    /// What callers pass to `predict`.
    type Input: Send + 'static;
    /// The validated, preprocessed form of an input, ready to be batched.
    type Prepared: Send + 'static;
    /// What callers get back.
    type Output: Send + 'static;

    /// Describes the model's inputs and outputs.
    fn signature(&self) -> Signature;

    /// Validates and preprocesses one input. Runs on the caller's thread; an error here is
    /// returned to the caller at once and nothing is queued.
    fn prepare(&self, input: Self::Input) -> Result<Self::Prepared, InputError>;

    /// The cost of one prepared input against a batch's token budget (for text models, its
    /// number of tokens). Defaults to 1.
    fn cost(&self, _prepared: &Self::Prepared) -> usize {
        1
    }

    /// How a batch's costs add up against the token budget
    /// (`BatchPolicy::max_batch_tokens`).
    /// Defaults to [`BatchCost::Sum`]; an engine that pads every input to the batch's
    /// longest computes [`BatchCost::Padded`].
    fn batch_cost(&self) -> BatchCost {
        BatchCost::Sum
    }

    /// Sample inputs a predictor runs through the model before it reports ready (pages in
    /// the weights, starts thread pools). Defaults to none; models build them from their
    /// signature (a short text, a vector of in-range values).
    fn warmup_inputs(&self) -> Vec<Self::Input> {
        Vec::new()
    }

    /// Runs a whole batch. Must return exactly one entry per input, in input order.
    fn run_batch(
        &self,
        batch: &[Self::Prepared],
    ) -> Result<BatchOutputs<Self::Output>, RuntimeError>;
}

/// The element type of a tensor in a [`Signature`], named as the Open Inference Protocol
/// names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DataType {
    /// Bytes or UTF-8 text.
    Bytes,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// A boolean.
    Bool,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// 8-bit unsigned integer.
    U8,
}

impl DataType {
    /// The Open Inference Protocol (KServe v2) name of this type, e.g. `"FP32"`.
    pub fn protocol_name(self) -> &'static str {
        match self {
            DataType::Bytes => "BYTES",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::Bool => "BOOL",
            DataType::I64 => "INT64",
            DataType::I32 => "INT32",
            DataType::U8 => "UINT8",
        }
    }
}

/// One named input or output of a model. A dimension of `-1` is variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name.
    pub name: String,
    /// Its element type.
    pub dtype: DataType,
    /// Its shape for one request (no batch dimension); `-1` marks a variable dimension.
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// A tensor spec.
    pub fn new(name: impl Into<String>, dtype: DataType, shape: impl Into<Vec<i64>>) -> Self {
        TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.into(),
        }
    }
}

/// What a model takes and returns, for validation messages, metadata endpoints and warm-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The model's name.
    pub name: String,
    /// Its inputs.
    pub inputs: Vec<TensorSpec>,
    /// Its outputs.
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// A signature with no inputs or outputs yet.
    pub fn new(name: impl Into<String>) -> Self {
        Signature {
            name: name.into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Adds an input.
    pub fn input(mut self, spec: TensorSpec) -> Self {
        self.inputs.push(spec);
        self
    }

    /// Adds an output.
    pub fn output(mut self, spec: TensorSpec) -> Self {
        self.outputs.push(spec);
        self
    }
}
