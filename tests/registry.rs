//! The registry: versions, labels, promotion, rollback, retirement, routing, shadow traffic,
//! hot swap under load, and the on-disk model repository.

mod common;

use common::block_on;
use proptest::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use modelhost::{
    BatchOutputs, DataType, Model, Signature, TensorSpec, cache::PredictionCache,
    error::InputError, error::RuntimeError, models::mlp::MlpClassifier, registry::ModelRepository,
    registry::Registry, registry::RegistryError, registry::Routing,
};

/// Answers `(input, tag)`: the tag says which version computed it, the input that the answer
/// is the caller's own.
struct Tagged {
    tag: u64,
    computed: AtomicU64,
    /// Answers every input with an error.
    fails: bool,
}

fn tagged(tag: u64) -> Tagged {
    Tagged {
        tag,
        computed: AtomicU64::new(0),
        fails: false,
    }
}

fn failing(tag: u64) -> Tagged {
    Tagged {
        fails: true,
        ..tagged(tag)
    }
}

impl Model for Tagged {
    type Input = u64;
    type Prepared = u64;
    type Output = (u64, u64);

    fn signature(&self) -> Signature {
        Signature::new("tagged").input(TensorSpec::new("x", DataType::I64, [1]))
    }

    fn prepare(&self, x: u64) -> Result<u64, InputError> {
        Ok(x)
    }

    fn run_batch(&self, batch: &[u64]) -> Result<BatchOutputs<(u64, u64)>, RuntimeError> {
        self.computed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(batch
            .iter()
            .map(|&x| match self.fails {
                false => Ok((x, self.tag)),
                true => Err(RuntimeError::Backend {
                    message: format!("version {} fails", self.tag),
                }),
            })
            .collect())
    }
}

fn registry() -> Registry<Tagged> {
    Registry::with_predictor_config(|b| b.max_delay(Duration::from_micros(50)))
}

#[test]
fn the_first_version_is_stable_and_takes_all_traffic() {
    let r = registry();
    r.deploy("m", "1", tagged(1)).unwrap();
    r.deploy("m", "2", tagged(2)).unwrap();
    let mut ids = std::collections::HashSet::new();
    for x in 0..100 {
        let answer = r.predict("m", x).unwrap();
        assert_eq!((&*answer.version, answer.output), ("1", (x, 1)));
        assert!(ids.insert(answer.request_id), "request ids are unique");
    }
    assert_eq!(r.stable("m").unwrap(), "1");
}

#[test]
fn a_weighted_split_lands_within_two_points_over_10000_requests() {
    let r = registry();
    r.deploy("m", "1", tagged(1)).unwrap();
    r.deploy("m", "2", tagged(2)).unwrap();
    r.label("m", "2", "canary").unwrap();
    r.set_routing("m", Routing::split([("stable", 90), ("canary", 10)]))
        .unwrap();
    let n = 10_000;
    let canary = (0..n)
        .filter(|&x| r.predict("m", x).unwrap().version.as_ref() == "2")
        .count();
    let share = canary as f64 / n as f64;
    assert!((share - 0.10).abs() <= 0.02, "canary share {share}");
    let reports = r.versions("m").unwrap();
    assert_eq!(reports[0].requests + reports[1].requests, n);
    assert_eq!((reports[0].traffic, reports[1].traffic), (0.9, 0.1));
}

#[test]
fn sticky_keys_never_switch_while_the_split_holds() {
    let r = registry();
    r.deploy("m", "1", tagged(1)).unwrap();
    r.deploy("m", "2", tagged(2)).unwrap();
    r.set_routing("m", Routing::split([("1", 50), ("2", 50)]))
        .unwrap();
    let mut on_two = 0;
    for user in 0..1000u64 {
        let key = format!("user-{user}");
        let first = r.predict_sticky("m", &key, user).unwrap().version;
        for _ in 0..5 {
            assert_eq!(r.predict_sticky("m", &key, user).unwrap().version, first);
        }
        on_two += usize::from(&*first == "2");
    }
    assert!(
        (400..=600).contains(&on_two),
        "{on_two} of 1000 users on version 2"
    );
}

#[test]
fn a_pinned_handle_keeps_its_version_after_promotion() {
    let r = registry();
    let v1 = r.deploy("m", "1", tagged(1)).unwrap();
    r.deploy("m", "2", tagged(2)).unwrap();
    r.promote("m", "2").unwrap();
    assert_eq!(r.predict("m", 7).unwrap().output, (7, 2));
    let pinned = v1.predict(7).unwrap();
    assert_eq!((&*pinned.version, pinned.output), ("1", (7, 1)));
}

#[test]
fn rollback_restores_the_previous_stable_version() {
    let r = registry();
    r.deploy("m", "1", tagged(1)).unwrap();
    r.deploy("m", "2", tagged(2)).unwrap();
    r.deploy("m", "3", tagged(3)).unwrap();
    r.promote("m", "2").unwrap();
    r.promote("m", "3").unwrap();
    assert_eq!(r.rollback("m").unwrap(), "2");
    assert_eq!(r.predict("m", 1).unwrap().output, (1, 2));
    assert_eq!(r.rollback("m").unwrap(), "1");
    assert_eq!(r.predict("m", 1).unwrap().output, (1, 1));
    assert_eq!(
        r.rollback("m"),
        Err(RegistryError::NothingToRollBack { name: "m".into() })
    );
}

#[test]
fn a_retired_version_stops_taking_requests_and_drains() {
    let r = registry();
    r.deploy("m", "1", tagged(1)).unwrap();
    let v2 = r.deploy("m", "2", tagged(2)).unwrap();
    r.set_routing("m", Routing::fixed("2")).unwrap();
    let in_flight = v2.predictor().predict_async(5);
    r.retire("m", "2").unwrap();
    assert_eq!(
        r.predict("m", 6).unwrap().output,
        (6, 1),
        "traffic falls back to stable"
    );
    assert!(matches!(
        r.handle("m", "2"),
        Err(RegistryError::UnknownVersion { .. })
    ));
    assert_eq!(
        block_on(in_flight),
        Ok((5, 2)),
        "what it accepted is answered"
    );
    assert_eq!(
        r.retire("m", "1"),
        Err(RegistryError::RetiringStable {
            name: "m".into(),
            version: "1".into()
        })
    );
}

#[test]
fn a_removed_model_loses_every_version_and_still_answers_what_it_accepted() {
    let r = registry();
    let v1 = r.deploy("m", "1", tagged(1)).unwrap();
    r.deploy("m", "2", tagged(2)).unwrap();
    r.label("m", "2", "canary").unwrap();
    r.deploy("other", "1", tagged(9)).unwrap();
    let in_flight = v1.predictor().predict_async(5);
    assert_eq!(r.remove("m").unwrap(), ["1", "2"]);
    assert_eq!(r.models(), ["other"]);
    assert_eq!(
        r.predict("m", 6).unwrap_err(),
        RegistryError::UnknownModel { name: "m".into() }
    );
    assert_eq!(
        r.label("m", "1", "canary"),
        Err(RegistryError::UnknownModel { name: "m".into() })
    );
    assert_eq!(
        block_on(in_flight),
        Ok((5, 1)),
        "what it accepted is answered"
    );
    assert_eq!(r.predict("other", 7).unwrap().output, (7, 9));
    assert_eq!(
        r.remove("m"),
        Err(RegistryError::UnknownModel { name: "m".into() })
    );
    // Deployed again, it starts over: its first version is stable, no old label is left.
    r.deploy("m", "2", tagged(3)).unwrap();
    assert_eq!(r.stable("m").unwrap(), "2");
    assert!(matches!(
        r.handle("m", "canary"),
        Err(RegistryError::UnknownVersion { .. })
    ));
    assert_eq!(r.predict("m", 8).unwrap().output, (8, 3));
}

#[test]
fn removing_a_model_while_versions_are_deployed_never_loses_a_deploy_silently() {
    // Each deploy either lands in the model that remove then takes out (and is counted in
    // what remove returns) or in the model after it; none is lost in between.
    for round in 0..20u64 {
        let r = Arc::new(registry());
        r.deploy("m", "0", tagged(0)).unwrap();
        let barrier = Barrier::new(2);
        let (deployed, removed) = std::thread::scope(|s| {
            let deployer = s.spawn(|| {
                barrier.wait();
                (1..=8u64)
                    .filter(|v| r.deploy("m", &v.to_string(), tagged(*v)).is_ok())
                    .map(|v| v.to_string())
                    .collect::<Vec<String>>()
            });
            barrier.wait();
            let removed = r.remove("m").unwrap();
            (deployer.join().unwrap(), removed)
        });
        let after: Vec<String> = r
            .versions("m")
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.version)
            .collect();
        let mut accounted: Vec<String> = removed
            .iter()
            .filter(|v| *v != "0")
            .cloned()
            .chain(after)
            .collect();
        accounted.sort();
        let mut deployed = deployed;
        deployed.sort();
        assert_eq!(accounted, deployed, "round {round}");
    }
}

#[test]
fn hot_swaps_under_32_threads_of_load_lose_and_fail_no_request() {
    let r = Arc::new(registry());
    r.deploy("m", "1", tagged(1)).unwrap();
    let stop = AtomicBool::new(false);
    let answered = AtomicU64::new(0);
    let barrier = Barrier::new(33);
    std::thread::scope(|s| {
        for t in 0..32u64 {
            let (r, stop, answered, barrier) = (&r, &stop, &answered, &barrier);
            s.spawn(move || {
                barrier.wait();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let x = t * 1_000_000 + i;
                    let answer = r.predict("m", x).expect("no request may fail");
                    assert_eq!(answer.output.0, x, "a crossed answer");
                    assert_eq!(answer.output.1.to_string(), *answer.version);
                    answered.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
        barrier.wait();
        // Deploy, promote, split, roll back and retire while the load runs.
        for v in 2..=21u64 {
            let name = v.to_string();
            r.deploy("m", &name, tagged(v)).unwrap();
            r.label("m", &name, "canary").unwrap();
            r.set_routing("m", Routing::split([("stable", 50), ("canary", 50)]))
                .unwrap();
            std::thread::sleep(Duration::from_millis(2));
            r.promote("m", &name).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            if v % 3 == 0 {
                r.rollback("m").unwrap();
            }
            // Retire every version but the stable one and the newest.
            for old in r.versions("m").unwrap() {
                if old.version != r.stable("m").unwrap() && old.version != name {
                    r.retire("m", &old.version).unwrap();
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(answered.load(Ordering::Relaxed) > 1000);
}

#[test]
fn shadow_traffic_is_mirrored_and_its_answers_discarded() {
    let r = registry();
    r.deploy("m", "1", tagged(1)).unwrap();
    let shadow = r.deploy("m", "2", tagged(2)).unwrap();
    r.set_routing("m", Routing::fixed("stable").with_shadow("2", 1.0))
        .unwrap();
    for x in 0..50 {
        assert_eq!(r.predict("m", x).unwrap().output, (x, 1));
    }
    // The shadow copies are answered on the shadow's worker; wait for them.
    for _ in 0..1000 {
        if shadow.predictor().stats().succeeded == 50 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let reports = r.versions("m").unwrap();
    assert_eq!((reports[0].requests, reports[0].shadow_requests), (50, 0));
    assert_eq!((reports[1].requests, reports[1].shadow_requests), (0, 50));
    assert_eq!(reports[1].latency.count, 50);
}

#[test]
fn async_predictions_are_routed_mirrored_and_counted_like_blocking_ones() {
    let r = registry();
    r.deploy("m", "1", tagged(1)).unwrap();
    r.deploy("m", "2", tagged(2)).unwrap();
    let shadow = r.deploy("m", "3", tagged(3)).unwrap();
    r.set_routing(
        "m",
        Routing::split([("1", 50), ("2", 50)]).with_shadow("3", 1.0),
    )
    .unwrap();
    let mut by_version = [0u64; 2];
    for x in 0..200 {
        let routed = block_on(r.predict_async("m", x)).unwrap();
        let tag = routed.output.1;
        assert_eq!(routed.output.0, x, "each request gets its own answer");
        assert_eq!(
            &*routed.version,
            tag.to_string(),
            "from the version it names"
        );
        by_version[tag as usize - 1] += 1;
    }
    assert!(
        by_version.iter().all(|&n| n > 50),
        "both sides of the split: {by_version:?}"
    );
    while shadow.predictor().stats().succeeded < 200 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let reports = r.versions("m").unwrap();
    assert_eq!(reports[0].requests, by_version[0]);
    assert_eq!(reports[1].requests, by_version[1]);
    assert_eq!((reports[2].requests, reports[2].shadow_requests), (0, 200));
    let unknown = block_on(r.predict_async("nope", 1));
    assert!(
        matches!(unknown, Err(RegistryError::UnknownModel { .. })),
        "{unknown:?}"
    );
}

#[test]
fn failed_shadow_copies_count_as_shadow_errors_not_live_errors() {
    let r = registry();
    r.deploy("m", "1", tagged(1)).unwrap();
    let shadow = r.deploy("m", "2", failing(2)).unwrap();
    r.set_routing("m", Routing::fixed("stable").with_shadow("2", 1.0))
        .unwrap();
    for x in 0..20 {
        assert_eq!(r.predict("m", x).unwrap().output, (x, 1));
    }
    // The shadow copies are answered on the shadow's worker; wait until each is counted.
    let counted = |r: &Registry<Tagged>| {
        let report = &r.versions("m").unwrap()[1];
        report.errors + report.shadow_errors
    };
    while counted(&r) < 20 {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(shadow.predictor().stats().failed, 20);
    let reports = r.versions("m").unwrap();
    assert_eq!(reports[1].shadow_requests, 20);
    assert_eq!(reports[1].shadow_errors, 20, "{:?}", reports[1]);
    assert_eq!((reports[1].requests, reports[1].errors), (0, 0));
}

#[test]
fn a_cache_shared_by_versions_never_crosses_them() {
    let cache = Arc::new(PredictionCache::builder().build());
    let c = cache.clone();
    let r = Registry::with_predictor_config(move |b| b.cache(c.clone()));
    let v1 = r.deploy("m", "1", tagged(1)).unwrap();
    let v2 = r.deploy("m", "2", tagged(2)).unwrap();
    for _ in 0..3 {
        assert_eq!(v1.predict(9).unwrap().output, (9, 1));
        assert_eq!(v2.predict(9).unwrap().output, (9, 2));
    }
    assert_eq!(cache.stats().hits, 4);
    assert_eq!(v1.predictor().model().computed.load(Ordering::Relaxed), 1);
    assert_eq!(v2.predictor().model().computed.load(Ordering::Relaxed), 1);
}

#[test]
fn a_version_redeployed_under_the_same_name_never_sees_the_old_cache_entries() {
    let cache = Arc::new(PredictionCache::builder().build());
    let c = cache.clone();
    let r = Registry::with_predictor_config(move |b| b.cache(c.clone()));
    r.deploy("m", "1", tagged(1)).unwrap();
    r.deploy("m", "2", tagged(2)).unwrap();
    assert_eq!(
        r.handle("m", "2").unwrap().predict(5).unwrap().output,
        (5, 2)
    );
    r.retire("m", "2").unwrap();
    r.deploy("m", "2", tagged(22)).unwrap(); // new weights, same version name
    assert_eq!(
        r.handle("m", "2").unwrap().predict(5).unwrap().output,
        (5, 22)
    );
}

#[test]
fn a_predictor_deployed_under_another_identity_is_refused() {
    let r = registry();
    let p = modelhost::Predictor::builder(tagged(1)).build().unwrap();
    let err = r.deploy_predictor("m", "1", p).unwrap_err();
    assert!(
        matches!(err, RegistryError::IdentityMismatch { .. }),
        "{err}"
    );
    let p = modelhost::Predictor::builder(tagged(1))
        .identity("m", "1")
        .build()
        .unwrap();
    assert!(r.deploy_predictor("m", "1", p).is_ok());
}

#[test]
fn unknown_names_are_typed_errors_that_list_what_exists() {
    let r = registry();
    r.deploy("m", "1", tagged(1)).unwrap();
    assert_eq!(
        r.predict("nope", 1).unwrap_err(),
        RegistryError::UnknownModel {
            name: "nope".into()
        }
    );
    let err = r.promote("m", "9").unwrap_err();
    assert_eq!(
        err.to_string(),
        "model `m` has no version or label `9`; it has versions [\"1\"]"
    );
    assert!(matches!(
        r.deploy("m", "1", tagged(1)),
        Err(RegistryError::VersionExists { .. })
    ));
}

#[test]
fn the_repository_loads_every_version_and_reload_follows_the_directory() {
    let root = std::env::temp_dir().join(format!("modelhost-repo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let digits = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/assets/digits");
    let copy = |version: &str| {
        let dir = root.join("digits").join(version);
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["model.json", "model.safetensors"] {
            std::fs::copy(digits.join(file), dir.join(file)).unwrap();
        }
    };
    copy("1");
    copy("10");
    copy("2");
    std::fs::create_dir_all(root.join("broken/1")).unwrap();

    let registry = Arc::new(Registry::new());
    let (repo, report) = ModelRepository::open(&root, registry.clone(), |dir: &std::path::Path| {
        MlpClassifier::load(dir)
    })
    .unwrap();
    assert_eq!(report.added.len(), 3);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, "broken");
    assert_eq!(
        registry.stable("digits").unwrap(),
        "10",
        "numeric order: 10 > 2"
    );
    assert_eq!(
        registry
            .predict("digits", vec![0.0; 64])
            .unwrap()
            .version
            .as_ref(),
        "10"
    );

    std::fs::remove_dir_all(root.join("digits/1")).unwrap();
    copy("11");
    let report = repo.reload().unwrap();
    assert_eq!(report.added, vec![("digits".to_string(), "11".to_string())]);
    assert_eq!(
        report.removed,
        vec![("digits".to_string(), "1".to_string())]
    );
    assert_eq!(
        registry.stable("digits").unwrap(),
        "10",
        "a new version waits to be promoted"
    );

    // Removing the stable version promotes the highest remaining one first.
    std::fs::remove_dir_all(root.join("digits/10")).unwrap();
    repo.reload().unwrap();
    assert_eq!(registry.stable("digits").unwrap(), "11");
    std::fs::remove_dir_all(&root).unwrap();
}

/// An empty repository root of this test process's own, named by `tag`.
fn digits_repository(tag: &str) -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("modelhost-repo-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    root
}

/// Copies the shipped digits model to `root/name/version/`.
fn copy_digits(root: &std::path::Path, name: &str, version: &str) {
    let digits = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/assets/digits");
    let dir = root.join(name).join(version);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["model.json", "model.safetensors"] {
        std::fs::copy(digits.join(file), dir.join(file)).unwrap();
    }
}

#[test]
fn the_repository_loads_and_unloads_one_model_at_a_time() {
    let root = digits_repository("control");
    let copy = |name: &str, version: &str| copy_digits(&root, name, version);
    copy("digits", "1");
    copy("digits", "2");
    copy("other", "1");
    let registry = Arc::new(Registry::new());
    let (repo, _) = ModelRepository::open(&root, registry.clone(), |dir: &std::path::Path| {
        MlpClassifier::load(dir)
    })
    .unwrap();
    let pair = |n: &str, v: &str| (n.to_string(), v.to_string());

    // Unloaded: every version leaves, the stable one too; a reload leaves it out.
    let in_flight = registry
        .handle("digits", "2")
        .unwrap()
        .predictor()
        .predict_async(vec![0.0; 64]);
    assert_eq!(repo.unload("digits").unwrap(), ["1", "2"]);
    assert!(block_on(in_flight).is_ok(), "what it accepted is answered");
    assert_eq!(registry.models(), ["other"]);
    assert_eq!(repo.unloaded(), [pair("digits", "1"), pair("digits", "2")]);
    copy("digits", "3");
    assert_eq!(repo.reload().unwrap(), Default::default());
    assert_eq!(registry.models(), ["other"]);
    assert_eq!(
        repo.unload("digits").unwrap(),
        Vec::<String>::new(),
        "twice is fine"
    );
    assert_eq!(
        repo.unload("nope"),
        Err(RegistryError::UnknownModel {
            name: "nope".into()
        })
    );

    // Loaded again: what is on disk now, the highest version stable.
    let report = repo.load("digits").unwrap();
    assert_eq!(
        report.added,
        [
            pair("digits", "1"),
            pair("digits", "2"),
            pair("digits", "3")
        ]
    );
    assert!(repo.unloaded().is_empty());
    assert_eq!(registry.stable("digits").unwrap(), "3");

    // Loading a loaded model follows its directory, and touches no other model.
    std::fs::remove_dir_all(root.join("digits/1")).unwrap();
    std::fs::remove_dir_all(root.join("other/1")).unwrap();
    let report = repo.load("digits").unwrap();
    assert_eq!(report.removed, [pair("digits", "1")]);
    assert!(
        report.added.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    assert_eq!(registry.models(), ["digits", "other"]);

    // A model added on disk; a version that cannot load is reported, the others serve.
    copy("added", "1");
    std::fs::create_dir_all(root.join("added/2")).unwrap();
    let report = repo.load("added").unwrap();
    assert_eq!(report.added, [pair("added", "1")]);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!((&*report.failed[0].0, &*report.failed[0].1), ("added", "2"));
    assert!(report.failed[0].2.contains("model.json"), "{report:?}");
    assert_eq!(registry.stable("added").unwrap(), "1");

    // A model whose every version directory is gone leaves the registry on load.
    std::fs::remove_dir_all(root.join("other")).unwrap();
    std::fs::create_dir_all(root.join("other")).unwrap();
    let report = repo.load("other").unwrap();
    assert_eq!(report.removed, [pair("other", "1")]);
    assert_eq!(registry.models(), ["added", "digits"]);

    // Names outside the repository, and directories that are not there, are errors.
    for name in ["", ".", "..", "../digits", "digits/3"] {
        let err = repo.load(name).unwrap_err();
        assert!(
            err.to_string().contains("one directory name"),
            "{name:?}: {err}"
        );
    }
    assert!(matches!(
        repo.load("missing"),
        Err(modelhost::error::LoadError::Io { .. })
    ));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn filtered_repositories_share_one_root_and_each_takes_only_its_own_directories() {
    let root = digits_repository("filtered");
    let copy = |name: &str, version: &str| copy_digits(&root, name, version);
    copy("digits", "1");
    copy("other", "1");
    // Marked as another kind's: the first repository must leave it alone.
    std::fs::write(root.join("other/1/kind"), "other").unwrap();

    let is_other = |dir: &std::path::Path| dir.join("kind").is_file();
    let mine = Arc::new(Registry::new());
    let (repo, report) = ModelRepository::open_filtered(
        &root,
        mine.clone(),
        move |dir: &std::path::Path| !is_other(dir),
        |dir: &std::path::Path| MlpClassifier::load(dir),
    )
    .unwrap();
    assert_eq!(report.added, [("digits".to_string(), "1".to_string())]);
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(mine.models(), ["digits"]);

    let theirs = Arc::new(Registry::new());
    let (_, report) =
        ModelRepository::open_filtered(&root, theirs.clone(), is_other, |dir: &std::path::Path| {
            MlpClassifier::load(dir)
        })
        .unwrap();
    assert_eq!(report.added, [("other".to_string(), "1".to_string())]);
    assert_eq!(theirs.models(), ["other"]);

    // A new version of the other kind appears: reload leaves it out, and adds this kind's.
    copy("other", "2");
    std::fs::write(root.join("other/2/kind"), "other").unwrap();
    copy("digits", "2");
    let report = repo.reload().unwrap();
    assert_eq!(report.added, [("digits".to_string(), "2".to_string())]);
    assert!(
        report.removed.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn versions_and_labels_never_share_a_name() {
    let r = registry();
    r.deploy("m", "1", tagged(1)).unwrap();
    r.label("m", "1", "canary").unwrap();
    for clash in ["stable", "canary"] {
        let refused = r.deploy("m", clash, tagged(2)).unwrap_err();
        assert!(
            matches!(&refused, RegistryError::NameClash { clash: c, .. } if c == clash),
            "{refused:?}"
        );
    }
    r.deploy("m", "2", tagged(2)).unwrap();
    let refused = r.label("m", "2", "1").unwrap_err();
    assert!(
        matches!(refused, RegistryError::NameClash { .. }),
        "{refused:?}"
    );
    // Every target still means what it meant.
    assert_eq!(r.handle("m", "canary").unwrap().version(), "1");
    assert_eq!(r.handle("m", "1").unwrap().version(), "1");
    assert_eq!(r.stable("m").unwrap(), "1");
}

#[derive(Debug, Clone)]
enum Op {
    Deploy(u64),
    Canary(u64),
    Promote(u64),
    Rollback,
    Retire(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u64..6).prop_map(Op::Deploy),
        (1u64..6).prop_map(Op::Canary),
        (1u64..6).prop_map(Op::Promote),
        Just(Op::Rollback),
        (1u64..6).prop_map(Op::Retire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random deploy / label / promote / rollback / retire sequences against the set of
    /// live versions: versions never cross, stable always names a live version once one
    /// exists, and every handle keeps answering with its own version.
    #[test]
    fn random_version_operations_never_cross_versions(ops in prop::collection::vec(op(), 1..30)) {
        let r = registry();
        let mut live = std::collections::BTreeSet::new();
        let mut handles = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            let name = |v: u64| v.to_string();
            match op {
                Op::Deploy(v) => match r.deploy("m", &name(v), tagged(v)) {
                    Ok(handle) => {
                        prop_assert!(live.insert(v));
                        handles.push((v, handle));
                    }
                    Err(e) => prop_assert!(live.contains(&v), "{:?}", e),
                },
                Op::Canary(v) => prop_assert_eq!(r.label("m", &name(v), "canary").is_ok(), live.contains(&v)),
                Op::Promote(v) => prop_assert_eq!(r.promote("m", &name(v)).is_ok(), live.contains(&v)),
                Op::Rollback => {
                    if let Ok(v) = r.rollback("m") {
                        prop_assert!(live.contains(&v.parse::<u64>().unwrap()));
                    }
                }
                Op::Retire(v) => {
                    if r.retire("m", &name(v)).is_ok() {
                        prop_assert!(live.remove(&v));
                    }
                }
            }
            if !live.is_empty() {
                let stable: u64 = r.stable("m").unwrap().parse().unwrap();
                prop_assert!(live.contains(&stable));
                let x = step as u64;
                let routed = r.predict("m", x).unwrap();
                prop_assert_eq!(routed.output, (x, routed.version.parse::<u64>().unwrap()));
                for v in &live {
                    let answer = r.handle("m", &name(*v)).unwrap().predict(x).unwrap();
                    prop_assert_eq!(answer.output, (x, *v));
                }
            }
            for (v, handle) in &handles {
                prop_assert_eq!(handle.predict(7).unwrap().output, (7, *v));
            }
        }
    }
}
