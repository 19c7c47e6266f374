//! The shipped digits classifier (`examples/assets/digits/`) served through a predictor.

#[path = "../examples/common/digits.rs"]
mod digits;

use modelhost::{Predictor, error::InputError, error::PredictError, models::mlp::MlpClassifier};

fn predictor() -> Predictor<MlpClassifier> {
    Predictor::builder(MlpClassifier::load(digits::assets()).unwrap())
        .max_batch_size(64)
        .build()
        .unwrap()
}

#[test]
fn shipped_model_classifies_held_back_digits_with_at_least_90_percent_accuracy() {
    let (_, test) = digits::split(digits::load(&digits::assets().join("digits.csv")).unwrap());
    assert_eq!(test.labels.len(), 359);
    let predictor = predictor();
    let answers = predictor.predict_many(test.images.clone());
    let correct = answers
        .iter()
        .zip(&test.labels)
        .filter(|(a, label)| a.as_ref().unwrap().index == **label as usize)
        .count();
    let accuracy = correct as f64 / test.labels.len() as f64;
    println!("held-back accuracy {accuracy:.3}");
    assert!(accuracy >= 0.9, "accuracy {accuracy}");
    for answer in answers {
        let c = answer.unwrap();
        assert_eq!(c.scores.len(), 10);
        assert!((c.scores.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert_eq!(c.label, c.index.to_string());
        assert_eq!(c.score, c.scores[c.index]);
    }
}

#[test]
fn a_vector_of_the_wrong_length_names_the_expected_length() {
    let err = predictor().predict(vec![1.0; 63]).unwrap_err();
    assert_eq!(
        err,
        PredictError::Input(InputError::WrongLength {
            field: "pixels".into(),
            expected: 64,
            got: 63
        })
    );
    assert_eq!(
        err.to_string(),
        "`pixels` has 63 values; the model expects exactly 64"
    );
}

#[test]
fn out_of_range_and_non_finite_pixels_are_refused_naming_the_range() {
    let predictor = predictor();
    let mut image = vec![0.0; 64];
    image[10] = 17.0;
    let err = predictor.predict(image.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`pixels`[10] is 17; allowed values lie in [0, 16]"
    );
    image[10] = f32::NAN;
    assert!(matches!(
        predictor.predict(image).unwrap_err(),
        PredictError::Input(InputError::NotFinite { index: 10, .. })
    ));
}
