//! The module graph of `src/` stays layered (docs/ARCHITECTURE.md): no two top-level
//! modules import each other, directly or around a circle, and the lower layers do not
//! know the upper ones.
//!
//! What counts as an import of module `m`: in code, a `crate::m` path (in `use` groups
//! too, nested or not), a `super::` chain that climbs to the crate root and names `m`,
//! and a root re-export (`crate::Predictor` is `predictor`'s); in doc comments, a
//! `crate::m` path, because a reader must follow it too. A doc link to a root re-export
//! (`crate::Predictor`) is the front door, not a module, and does not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `module -> modules it refers to`, for the top-level modules of `src/`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files: BTreeMap<String, Vec<(PathBuf, usize)>> = BTreeMap::new();
    for entry in std::fs::read_dir(src()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "lib.rs" || name == "main.rs" || name == "bin" {
            continue;
        }
        let module = name.trim_end_matches(".rs").to_string();
        files.insert(module, rust_files(&path, 1));
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let exports = root_exports(&modules);
    files
        .iter()
        .map(|(module, paths)| {
            let mut deps = BTreeSet::new();
            for (path, depth) in paths {
                let text = std::fs::read_to_string(path).unwrap();
                for dep in references(without_unit_tests(&text), *depth, &exports) {
                    if dep != *module && modules.contains(&dep) {
                        deps.insert(dep);
                    }
                }
            }
            (module.clone(), deps)
        })
        .collect()
}

/// The `.rs` files under `path` with their module depth (`src/x.rs` and `src/x/mod.rs`
/// are 1, `src/x/y.rs` is 2, ...).
fn rust_files(path: &Path, depth: usize) -> Vec<(PathBuf, usize)> {
    if path.is_file() {
        return vec![(path.to_path_buf(), depth)];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p, depth + 1));
        } else if p.extension().is_some_and(|e| e == "rs") {
            let is_mod = p.file_name().is_some_and(|n| n == "mod.rs");
            out.push((p, if is_mod { depth } else { depth + 1 }));
        }
    }
    out
}

/// Names the crate root re-exports from its own modules (`pub use predictor::{...}`), by
/// the module they come from.
fn root_exports(modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut out = BTreeMap::new();
    for statement in lib.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        if !modules.contains(module) {
            continue;
        }
        for name in names.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                out.insert(name.to_string(), module.to_string());
            }
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

/// The first identifier of `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of each path in a `use` group that starts at `group` (just after
/// its `{`), at any nesting depth only for the group's own items.
fn group_heads(group: &str) -> Vec<&str> {
    let (mut depth, mut heads, mut item_start) = (0usize, Vec::new(), 0usize);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                heads.push(ident(group[item_start..i].trim()));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(ident(group[item_start..i].trim()));
                item_start = i + 1;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules a file at `depth` refers to (see the module docs).
fn references(text: &str, depth: usize, exports: &BTreeMap<String, String>) -> Vec<String> {
    // `super::super::x` from a file `depth` modules deep climbs to the root when there are
    // `depth` supers (and no more before them).
    let chain = "super::".repeat(depth);
    let crate_paths = text.match_indices("crate::").map(|(at, m)| (at, m.len()));
    let super_paths = text
        .match_indices(chain.as_str())
        .filter(|(at, _)| !text[..*at].ends_with("super::"))
        .map(|(at, m)| (at, m.len()));
    let mut out = Vec::new();
    for (at, len, via_super) in crate_paths
        .map(|(at, len)| (at, len, false))
        .chain(super_paths.map(|(at, len)| (at, len, true)))
    {
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let doc = text[line_start..].trim_start().starts_with("//");
        if doc && via_super {
            continue;
        }
        // A `use` group may run over several lines: it is read from the text onwards.
        let rest = &text[at + len..];
        let names = match rest.strip_prefix('{') {
            Some(group) => group_heads(group),
            None => vec![ident(rest)],
        };
        for name in names {
            if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                out.push(name.to_string());
            } else if !doc && let Some(module) = exports.get(name) {
                out.push(module.clone());
            }
        }
    }
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
    let exports: BTreeMap<String, String> = [("Predictor".to_string(), "predictor".to_string())]
        .into_iter()
        .collect();
    let code = "use crate::{error::X, model::{A, B},\n    cache::C};\nfn f() { crate::Predictor::x() }\n/// [`Y`](crate::drift::Y) and crate::Predictor\nuse super::registry::R;";
    assert_eq!(
        references(code, 1, &exports),
        vec!["error", "model", "cache", "predictor", "drift", "registry"]
    );
    // Two modules deep, one `super::` stays inside the module.
    assert!(references("use super::queue::Q;", 2, &exports).is_empty());
    assert_eq!(
        references("use super::super::metrics::M;", 2, &exports),
        vec!["metrics"]
    );
    assert_eq!(
        without_unit_tests("a crate::x\n#[cfg(test)]\nmod tests { crate::y }"),
        "a crate::x\n"
    );
}
