//! The layering of `src/` stays what `src/lib.rs` says: no module of the
//! library reaches, through any chain of imports, back to itself, neither
//! among the top-level modules nor among the files of one module folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The code of a file without its comments (doc links name modules too).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers that follow `prefix` in `text` (`crate::` -> `broker`).
fn after(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .filter(|(i, _)| {
            let before = text[..*i].chars().next_back();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        })
        .map(|(i, _)| {
            text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// The library's top-level modules (binary code and `lib.rs` excluded).
fn top_level() -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for path in files(&src()) {
        let rel = path.strip_prefix(src()).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let name = first.trim_end_matches(".rs").to_string();
        if ["lib", "main", "bin"].contains(&name.as_str()) {
            continue;
        }
        modules.entry(name).or_default().push(path);
    }
    modules
}

/// A cycle of `graph`, if it has one, as the path that closes it.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_top_level_modules_form_no_cycle() {
    let modules = top_level();
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut graph = Graph::new();
    for (name, paths) in &modules {
        let uses: BTreeSet<String> = paths
            .iter()
            .flat_map(|p| after(&code(p), "crate::"))
            .filter(|m| names.contains(m) && m != name)
            .collect();
        graph.insert(name.clone(), uses);
    }
    assert!(graph.len() >= 15, "modules found: {:?}", graph.keys());
    assert!(
        graph["app"].contains("delivery"),
        "the reader reads imports"
    );
    if let Some(found) = cycle(&graph) {
        panic!(
            "module cycle in src/: {}\n(see the layering in src/lib.rs)",
            found.join(" -> ")
        );
    }
}

#[test]
fn the_files_of_each_module_folder_form_no_cycle() {
    for (module, paths) in top_level() {
        let dir = src().join(&module);
        if !dir.is_dir() {
            continue;
        }
        let stem = |p: &Path| p.file_stem().unwrap().to_string_lossy().into_owned();
        let siblings: BTreeSet<String> = paths
            .iter()
            .filter(|p| p.parent() == Some(dir.as_path()))
            .map(|p| stem(p))
            .filter(|s| s != "mod")
            .collect();
        let mut graph = Graph::new();
        for path in paths.iter().filter(|p| p.parent() == Some(dir.as_path())) {
            let name = stem(path);
            if name == "mod" {
                continue;
            }
            let text = code(path);
            let uses: BTreeSet<String> = after(&text, "super::")
                .into_iter()
                .chain(after(&text, &format!("crate::{module}::")))
                .filter(|s| siblings.contains(s) && *s != name)
                .collect();
            graph.insert(name, uses);
        }
        if let Some(found) = cycle(&graph) {
            panic!(
                "cycle among the files of src/{module}/: {}",
                found.join(" -> ")
            );
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .fold(Graph::new(), |mut g, (from, to)| {
            g.entry(from.into()).or_default().insert(to.into());
            g
        });
    assert_eq!(cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&acyclic), None);
    assert_eq!(
        after("use crate::broker::X; x::crate::no", "crate::"),
        ["broker"].map(String::from).into()
    );
}
