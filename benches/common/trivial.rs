//! A model that does no work: all the time measured is the predictor's.

use modelhost::{
    BatchOutputs, DataType, Model, Signature, TensorSpec, error::InputError, error::RuntimeError,
};

/// Returns its input: all the time measured is the predictor's.
pub struct Trivial;

impl Model for Trivial {
    type Input = u64;
    type Prepared = u64;
    type Output = u64;

    fn signature(&self) -> Signature {
        Signature::new("trivial").input(TensorSpec::new("x", DataType::I64, [1]))
    }

    fn prepare(&self, x: u64) -> Result<u64, InputError> {
        Ok(x)
    }

    fn run_batch(&self, batch: &[u64]) -> Result<BatchOutputs<u64>, RuntimeError> {
        Ok(batch.iter().map(|&x| Ok(x)).collect())
    }
}
