//! Tabular models: the shipped wine classifier (trained by `examples/train_wine.rs`) on its
//! held-back wines, a hand-written regression model with every feature type, and a typed
//! error for each kind of bad row.

#[path = "../examples/common/wine.rs"]
mod wine;

mod common;

use std::sync::Arc;

use common::{house_schema, scratch_dir, write_house_model};
use modelhost::{
    Predictor, cache::PredictionCache, error::InputError, error::LoadError, error::PredictError,
    metrics::Outcome, models::tabular::FeatureValue, models::tabular::TabularModel,
    models::tabular::TabularOutput, models::tabular::TabularRow,
};

fn wine_predictor() -> Predictor<TabularModel> {
    Predictor::builder(TabularModel::load(wine::assets()).unwrap())
        .max_batch_size(32)
        .build()
        .unwrap()
}

fn input_error(result: Result<TabularOutput, PredictError>) -> InputError {
    match result {
        Err(PredictError::Input(e)) => e,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn the_wine_classifier_gets_the_held_back_wines_right() {
    let predictor = wine_predictor();
    let (rows, classes): (Vec<TabularRow>, Vec<usize>) = wine::load()
        .unwrap()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| wine::held_back(*i))
        .map(|(_, r)| r)
        .unzip();
    assert_eq!(rows.len(), 35);
    let answers = predictor.predict_many(rows);
    let mut correct = 0;
    for (answer, class) in answers.into_iter().zip(&classes) {
        let c = answer.unwrap().class().cloned().unwrap();
        assert_eq!(c.scores.len(), 3);
        assert!((c.scores.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(c.label, format!("class_{}", c.index));
        correct += usize::from(c.index == *class);
    }
    // train_wine prints 0.971 (34 of 35) for this split.
    assert!(correct >= 33, "{correct} of 35 held-back wines right");
}

#[test]
fn each_bad_row_gets_a_typed_error_naming_the_feature_and_what_is_allowed() {
    let predictor = wine_predictor();
    let (good, _) = wine::load().unwrap().remove(0);
    assert!(predictor.predict(good.clone()).is_ok());

    let mut missing = good.clone();
    missing.0.remove("proline");
    let e = input_error(predictor.predict(missing));
    assert_eq!(
        e,
        InputError::Missing {
            field: "proline".into()
        }
    );
    assert!(e.to_string().contains("`proline` is missing"));

    let e = input_error(predictor.predict(good.clone().with("colour", 3.0)));
    match &e {
        InputError::Unexpected { field, allowed } => {
            assert_eq!(field, "colour");
            assert_eq!(allowed.len(), 13);
            assert!(allowed.contains(&"color_intensity".to_string()));
        }
        other => panic!("{other:?}"),
    }

    for bad in [f64::NAN, f64::INFINITY, -1.0, 1e6] {
        let e = input_error(predictor.predict(good.clone().with("proline", bad)));
        match e {
            InputError::FeatureOutOfRange {
                field, min, max, ..
            } => {
                assert_eq!(field, "proline");
                assert_eq!(min, 0.0);
                assert!(max > 1680.0 && max < 2600.0, "{max}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }

    let e = input_error(predictor.predict(good.clone().with("alcohol", "high")));
    assert_eq!(
        e,
        InputError::WrongType {
            field: "alcohol".into(),
            expected: "a number".into(),
            got: "the text \"high\"".into()
        }
    );
    // Every bad row was refused before the queue; only the good one was answered.
    let outcomes = predictor.stats().outcomes;
    assert_eq!(outcomes.get(&Outcome::InputError), Some(&7));
    assert_eq!(outcomes.get(&Outcome::Success), Some(&1));
}

#[test]
fn a_regression_model_standardises_encodes_and_destandardises_exactly() {
    let dir = scratch_dir("house");
    write_house_model(&dir, house_schema());
    let model = TabularModel::load(&dir).unwrap();
    let row = TabularRow::new()
        .with("area", 140.0)
        .with("rooms", 4)
        .with("garden", true)
        .with("city", "bergen");
    // (140-100)/20 = 2, (4-3)/1 = 1, garden 1, one-hot [0, 1, 0].
    assert_eq!(
        model.encode(&row).unwrap(),
        vec![2.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    );
    let predictor = Predictor::builder(model).build().unwrap();
    let y = 0.1 + 2.0 + 2.0 + 3.0 - 0.5;
    let value = predictor.predict(row).unwrap().value().unwrap();
    assert!((value - (y * 50.0 + 300.0)).abs() < 1e-4, "{value}");

    // Defaults fill garden (false) and city (oslo).
    let row = TabularRow::new().with("area", 100.0).with("rooms", 3);
    let value = predictor.predict(row).unwrap().value().unwrap();
    assert!(
        (value - ((0.1 + 0.5) * 50.0 + 300.0)).abs() < 1e-4,
        "{value}"
    );

    let e =
        input_error(predictor.predict(TabularRow::new().with("area", 100.0).with("rooms", 2.5)));
    assert_eq!(
        e,
        InputError::WrongType {
            field: "rooms".into(),
            expected: "a whole number".into(),
            got: "the number 2.5".into()
        }
    );
    let e = input_error(
        predictor.predict(
            TabularRow::new()
                .with("area", 100.0)
                .with("rooms", 2)
                .with("city", "paris"),
        ),
    );
    assert_eq!(
        e.to_string(),
        "`city` is \"paris\"; allowed values are: oslo, bergen, tromso"
    );
    let e = input_error(
        predictor.predict(
            TabularRow::new()
                .with("area", 100.0)
                .with("rooms", 2)
                .with("garden", "yes"),
        ),
    );
    assert!(e.to_string().contains("it must be true or false"), "{e}");
}

#[test]
fn rows_deserialise_from_json_objects_and_cache_by_value() {
    let dir = scratch_dir("house-cache");
    write_house_model(&dir, house_schema());
    let cache = Arc::new(PredictionCache::builder().max_entries(100).build());
    let predictor = Predictor::builder(TabularModel::load(&dir).unwrap())
        .cache(cache.clone())
        .build()
        .unwrap();
    let row: TabularRow =
        serde_json::from_str(r#"{"area": 140, "rooms": 4, "garden": true, "city": "bergen"}"#)
            .unwrap();
    assert_eq!(row.0["garden"], FeatureValue::Bool(true));
    let first = predictor.predict(row.clone()).unwrap();
    let second = predictor.predict(row).unwrap();
    assert_eq!(first, second);
    assert_eq!(cache.stats().hits, 1);
}

#[test]
fn schemas_that_cannot_work_are_refused_at_load_naming_the_feature() {
    let cases = [
        ("/features/1/std", serde_json::json!(0), "feature `rooms`"),
        (
            "/features/2/default",
            serde_json::json!("maybe"),
            "default of feature `garden`",
        ),
        (
            "/features/3/values",
            serde_json::json!([]),
            "feature `city`",
        ),
        (
            "/features/0/min",
            serde_json::json!(600),
            "feature `area`: min must be <= max",
        ),
    ];
    for (pointer, value, expected) in cases {
        let mut schema = house_schema();
        *schema.pointer_mut(pointer).unwrap() = value;
        let dir = scratch_dir("house-bad");
        write_house_model(&dir, schema);
        let err = TabularModel::load(&dir).unwrap_err();
        assert!(matches!(err, LoadError::Config { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{pointer}: {err}");
    }
    // Weights that do not fit the schema name the tensor.
    let dir = scratch_dir("house-shape");
    let mut schema = house_schema();
    schema["features"].as_array_mut().unwrap().pop();
    write_house_model(&dir, schema);
    let err = TabularModel::load(&dir).unwrap_err();
    assert!(err.to_string().contains("layers.0.weight"), "{err}");
}

#[test]
fn values_compare_and_hash_alike_and_unbounded_features_refuse_overflow() {
    use std::hash::{BuildHasher, RandomState};
    let hasher = RandomState::new();
    let (nan, zero, neg_zero) = (
        FeatureValue::Number(f64::NAN),
        FeatureValue::Number(0.0),
        FeatureValue::Number(-0.0),
    );
    assert_eq!(nan, nan.clone());
    assert_eq!(zero, neg_zero);
    assert_eq!(hasher.hash_one(&zero), hasher.hash_one(&neg_zero));
    assert_ne!(FeatureValue::Number(1.0), FeatureValue::Text("1".into()));

    // `area` without bounds: 1e300 would standardise to infinity in f32.
    let dir = scratch_dir("house-unbounded");
    let mut schema = house_schema();
    let area = schema["features"][0].as_object_mut().unwrap();
    area.remove("min");
    area.remove("max");
    write_house_model(&dir, schema);
    let predictor = Predictor::builder(TabularModel::load(&dir).unwrap())
        .build()
        .unwrap();
    let e = input_error(predictor.predict(TabularRow::new().with("area", 1e300).with("rooms", 2)));
    assert!(
        matches!(e, InputError::FeatureOutOfRange { ref field, .. } if field == "area"),
        "{e}"
    );
    assert!(
        predictor
            .predict(TabularRow::new().with("area", 1e6).with("rooms", 2))
            .is_ok()
    );
}

#[test]
fn schemas_without_a_whole_number_or_with_one_class_are_refused() {
    for (pointer, value, expected) in [
        (
            "/features/1/min",
            serde_json::json!(0.2),
            "no whole number lies in [0.2, 0.8]",
        ),
        (
            "/task",
            serde_json::json!({"type": "classification", "labels": ["only"]}),
            "at least two labels",
        ),
    ] {
        let mut schema = house_schema();
        *schema.pointer_mut(pointer).unwrap() = value;
        if pointer == "/features/1/min" {
            schema["features"][1]["max"] = serde_json::json!(0.8);
        }
        let dir = scratch_dir("house-refused");
        write_house_model(&dir, schema);
        let err = TabularModel::load(&dir).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
}
