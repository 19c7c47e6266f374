//! The module graph of `src/` stays layered (docs/ARCHITECTURE.md): no two top-level
//! modules import each other, directly or around a circle, and the lower layers do not
//! know the upper ones. An import is any `crate::module` path outside unit tests, doc
//! links included: a doc that points up the layers is a dependency a reader must follow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `module -> modules it refers to`, for the top-level modules of `src/`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "lib.rs" || name == "main.rs" || name == "bin" {
            continue;
        }
        let module = name.trim_end_matches(".rs").to_string();
        files.insert(module, rust_files(&path));
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, paths)| {
            let mut deps = BTreeSet::new();
            for path in paths {
                let text = std::fs::read_to_string(path).unwrap();
                for dep in crate_references(without_unit_tests(&text)) {
                    if dep != *module && modules.contains(&dep) {
                        deps.insert(dep);
                    }
                }
            }
            (module.clone(), deps)
        })
        .collect()
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}

/// The text before a trailing `#[cfg(test)] mod tests {` (unit tests may reach anywhere).
fn without_unit_tests(text: &str) -> &str {
    let mut search = 0;
    while let Some(at) = text[search..].find("#[cfg(test)]") {
        let start = search + at;
        let rest = text[start + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod tests") {
            return &text[..start];
        }
        search = start + 1;
    }
    text
}

/// Module names in `crate::name` and `crate::{a, b::c}` paths.
fn crate_references(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|item| ident(item.trim())));
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|m| m.starts_with(|c: char| c.is_ascii_lowercase()));
    out
}

/// One circle in the graph, if there is any.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(dep, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_top_level_modules_import_each_other_around_a_circle() {
    let graph = module_graph();
    assert!(graph.len() >= 10, "found only {:?}", graph.keys());
    if let Some(circle) = find_circle(&graph) {
        panic!(
            "import circle: {}\n(see docs/ARCHITECTURE.md for the layers; the graph is {graph:#?})",
            circle.join(" -> ")
        );
    }
}

#[test]
fn lower_layers_do_not_know_the_upper_ones() {
    let graph = module_graph();
    let deps = |m: &str| graph.get(m).cloned().unwrap_or_default();
    // The foundation knows nothing of the crate.
    for leaf in ["error", "oneshot", "util"] {
        assert!(deps(leaf).is_empty(), "{leaf} imports {:?}", deps(leaf));
    }
    // The batcher knows the model and the counters, never the cache or the predictor.
    for upper in ["cache", "predictor", "registry", "models"] {
        assert!(!deps("batch").contains(upper), "batch imports {upper}");
    }
    // Metrics read what their sources hand them; they import none of the sources.
    for source in ["predictor", "registry", "cache", "drift", "batch"] {
        assert!(
            !deps("metrics").contains(source),
            "metrics imports {source}"
        );
    }
    // Errors do not reach into format internals.
    assert!(!deps("error").contains("formats"), "error imports formats");
}

#[test]
fn the_checker_sees_a_circle_when_there_is_one() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        find_circle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let refs = crate_references(
        "use crate::{error::X, model::{A, B}};\n/// [`Y`](crate::cache::Y) and crate::Predictor",
    );
    assert_eq!(refs, vec!["error", "model", "cache"]);
    assert_eq!(
        without_unit_tests("a crate::x\n#[cfg(test)]\nmod tests { crate::y }"),
        "a crate::x\n"
    );
}
