//! The loaders, attacked from outside: `hostile_loaders write DIR` writes the hostile
//! weight files of `tests/hostile/mod.rs` into DIR; `hostile_loaders load FILE` loads one
//! and reports. Exit status: 0 loaded, 2 refused with a typed error (printed on stdout as
//! `Variant: message`), 1 bad usage. A panic or an abort shows as any other status.
//! `scripts/hostile-loaders.sh` runs every file under a 1 GiB address-space cap.

#[path = "../tests/hostile/mod.rs"]
mod hostile;

use modelhost::Device;
use modelhost::error::LoadError;
use modelhost::formats;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1..).unwrap_or_default() {
        [cmd, dir] if cmd == "write" => {
            for h in hostile::all() {
                let want = h.refused_as.unwrap_or("loads");
                if let Err(e) = std::fs::write(std::path::Path::new(dir).join(h.name), &h.bytes) {
                    eprintln!("{}: {e}", h.name);
                    std::process::exit(1);
                }
                println!("{}\t{}\t{}\t{}", h.name, h.bytes.len(), want, h.attack);
            }
        }
        [cmd, file] if cmd == "load" => {
            match formats::load_tensors(std::path::Path::new(file), &Device::Cpu) {
                Ok(t) => println!("loaded {} tensors", t.len()),
                Err(e) => {
                    let kind = match &e {
                        LoadError::OverBudget { .. } => "OverBudget",
                        LoadError::Corrupt { .. } => "Corrupt",
                        LoadError::UnsafePickle { .. } => "UnsafePickle",
                        LoadError::Unsupported { .. } => "Unsupported",
                        LoadError::UnknownFormat { .. } => "UnknownFormat",
                        _ => "LoadError",
                    };
                    println!("{kind}: {e}");
                    std::process::exit(2);
                }
            }
        }
        _ => {
            eprintln!("usage: hostile_loaders write DIR | hostile_loaders load FILE");
            std::process::exit(1);
        }
    }
}
