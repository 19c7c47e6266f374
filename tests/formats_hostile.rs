//! Hostile weight files (issue 16): each asks a loader for far more than its size and must
//! be refused with a typed error naming the file, before anything big is allocated; tricky
//! but valid files must still load. The files are built by `tests/hostile/mod.rs`;
//! `scripts/hostile-loaders.sh` runs the same files under a 1 GiB address-space cap.

#[path = "hostile/mod.rs"]
mod hostile;

use std::path::PathBuf;

use candle_core::Tensor;
use modelhost::error::LoadError;
use modelhost::{Device, formats};

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("modelhost-hostile-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn variant(e: &LoadError) -> &'static str {
    match e {
        LoadError::OverBudget { .. } => "OverBudget",
        LoadError::Corrupt { .. } => "Corrupt",
        LoadError::UnsafePickle { .. } => "UnsafePickle",
        LoadError::Unsupported { .. } => "Unsupported",
        _ => "other",
    }
}

#[test]
fn every_hostile_file_is_refused_with_a_typed_error_naming_the_file() {
    let dir = scratch("all");
    for h in hostile::all() {
        assert!(h.bytes.len() <= 5 << 20, "{}: fixtures stay small", h.name);
        let path = dir.join(h.name);
        std::fs::write(&path, &h.bytes).unwrap();
        // Time and memory are measured by scripts/hostile-loaders.sh under prlimit and
        // timeout, not asserted here.
        let got = formats::load_tensors(&path, &Device::Cpu);
        match (h.refused_as, got) {
            (None, Ok(t)) => assert!(!t.is_empty(), "{}", h.name),
            (None, Err(e)) => panic!("{} ({}): valid, but refused: {e}", h.name, h.attack),
            (Some(want), Ok(_)) => panic!("{} ({}): loaded; want {want}", h.name, h.attack),
            (Some(want), Err(e)) => {
                assert_eq!(variant(&e), want, "{} ({}): {e}", h.name, h.attack);
                let msg = e.to_string();
                assert!(msg.contains(&path.display().to_string()), "{msg}");
                if let LoadError::OverBudget { limit, .. } = &e {
                    assert!(msg.contains(&limit.to_string()), "{msg}");
                    assert!(*limit <= 8 * h.bytes.len() as u64 + (1 << 20), "{msg}");
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn storage_ptr(t: &Tensor) -> usize {
    let (s, _) = t.storage_and_layout();
    &*s as *const _ as usize
}

#[test]
fn tied_weights_are_read_once_and_share_one_storage() {
    let dir = scratch("tied");
    let floats: Vec<u8> = (0..4096u32)
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect();
    let names: Vec<String> = (0..50).map(|i| format!("w{i}")).collect();
    let mut meta: Vec<hostile::Meta> = names
        .iter()
        .map(|n| (n.as_str(), "0", 4096, 0, &[64u64, 64][..], &[64u64, 1][..]))
        .collect();
    meta.push(("half", "0", 4096, 2048, &[32, 64], &[64, 1]));
    meta.push(("transposed", "0", 4096, 0, &[64, 64], &[1, 64]));
    let path = dir.join("tied.pth");
    let pkl = hostile::state_dict(&meta);
    std::fs::write(
        &path,
        hostile::torch_zip("archive", &pkl, &[("0", &floats)]),
    )
    .unwrap();
    let t = formats::load_tensors(&path, &Device::Cpu).unwrap();
    assert_eq!(t.len(), 52);
    let p = storage_ptr(&t["w0"]);
    for n in &names {
        assert_eq!(storage_ptr(&t[n]), p, "{n} has a copy of its own");
    }
    assert_eq!(storage_ptr(&t["half"]), p);
    let half: Vec<Vec<f32>> = t["half"].to_vec2().unwrap();
    assert_eq!(half[0][0], 2048.0);
    let tr: Vec<Vec<f32>> = t["transposed"].to_vec2().unwrap();
    let w: Vec<Vec<f32>> = t["w3"].to_vec2().unwrap();
    assert_eq!(tr[5][7], w[7][5]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_whose_directory_is_named_data_pkl_loads() {
    let dir = scratch("dirname");
    let path = dir.join("odd.pth");
    let pkl = hostile::state_dict(&[("w", "0", 2, 0, &[2], &[1])]);
    let floats: Vec<u8> = [1.5f32, 2.5].iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(
        &path,
        hostile::torch_zip("data.pkl", &pkl, &[("0", &floats)]),
    )
    .unwrap();
    let t = formats::load_tensors(&path, &Device::Cpu).unwrap();
    assert_eq!(t["w"].to_vec1::<f32>().unwrap(), vec![1.5, 2.5]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn safetensors_with_header_lengths_that_look_like_pickle_protos_load() {
    let dir = scratch("st");
    for n in [128usize, 384, 640] {
        let path = dir.join(format!("h{n}.safetensors"));
        std::fs::write(&path, hostile::safetensors_with_header(n)).unwrap();
        assert_eq!(
            formats::detect(&path).unwrap(),
            modelhost::error::WeightFormat::Safetensors
        );
        let t = formats::load_tensors(&path, &Device::Cpu).unwrap();
        assert_eq!(t["w"].to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
