//! The documentation stays true to the code, without any service running:
//! links in README.md and docs/ stay inside the repository, and the interface
//! reference (docs/reference.md) names every `WF_*` variable, metric, admin
//! API error code, envelope reject code, event type and queue the code has.
//!
//! Names are read from the code itself (the source text, or the library where
//! it exposes them), so a new variable, metric, code or queue fails here until
//! it is documented, and a documented variable the code no longer reads fails
//! too.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use webhook_fanout::event::{Catalogue, RejectReason};
use webhook_fanout::metrics::{JOB_REJECT_REASONS, Metrics};

const REFERENCE: &str = "docs/reference.md";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// README.md and every Markdown file under docs/, as paths relative to the root.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    files.extend(
        files_under("docs")
            .into_iter()
            .filter(|f| f.ends_with(".md")),
    );
    files
}

/// Every file under `dir` (relative to the root), recursively, sorted.
fn files_under(dir: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let entries =
            fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).expect("under the root");
                out.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), &root().join(dir), &mut out);
    out.sort();
    out
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `text` contains `needle` not glued to more identifier characters
/// on either side (so `WF_X` is not found inside `WF_X_Y`, nor
/// `{ns}.deliver` inside `{ns}.deliveries`).
fn mentions(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        let glued_before = needle.starts_with(is_word_char) && before.is_some_and(is_word_char);
        let glued_after = needle.ends_with(is_word_char) && after.is_some_and(is_word_char);
        !glued_before && !glued_after
    })
}

/// Fails listing every name of `expected` that `present` says is missing.
fn assert_all_present(
    what: &str,
    whence: &str,
    expected: &BTreeSet<String>,
    present: impl Fn(&str) -> bool,
) {
    let missing: Vec<&String> = expected.iter().filter(|n| !present(n)).collect();
    assert!(
        missing.is_empty(),
        "{} of the {} {what} (from {whence}) missing: {}",
        missing.len(),
        expected.len(),
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

// ---------------------------------------------------------------------------
// A small reader of Rust call arguments, enough for literal arguments.

/// Skips a string literal starting at `i` (`"…"`, `r"…"`, `r#"…"#`, `b"…"`);
/// returns the index after it, or `None` if none starts there.
fn skip_string(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    if s.get(j) == Some(&b'b') {
        j += 1;
    }
    if s.get(j) == Some(&b'r') {
        let mut hashes = 0;
        let mut k = j + 1;
        while s.get(k) == Some(&b'#') {
            hashes += 1;
            k += 1;
        }
        if s.get(k) != Some(&b'"') {
            return None;
        }
        k += 1;
        while k < s.len() {
            if s[k] == b'"'
                && s[k + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|&&c| c == b'#')
                    .count()
                    == hashes
            {
                return Some(k + 1 + hashes);
            }
            k += 1;
        }
        return Some(s.len());
    }
    if s.get(j) != Some(&b'"') {
        return None;
    }
    let mut k = j + 1;
    while k < s.len() {
        match s[k] {
            b'\\' => k += 2,
            b'"' => return Some(k + 1),
            _ => k += 1,
        }
    }
    Some(s.len())
}

/// The top-level arguments of the call whose `(` is just before `start`, as
/// trimmed source text.
fn call_arguments(src: &str, start: usize) -> Vec<String> {
    let s = src.as_bytes();
    let (mut args, mut depth, mut from, mut i) = (Vec::new(), 0usize, start, start);
    while i < s.len() {
        let previous_is_word = i > 0 && is_word_char(s[i - 1] as char);
        if !previous_is_word && let Some(end) = skip_string(s, i) {
            i = end;
            continue;
        }
        match s[i] {
            b'\'' => {
                // A char literal ('x', '\n', '"'); otherwise a lifetime.
                if s.get(i + 1) == Some(&b'\\') {
                    // Past the backslash and the escaped character.
                    i += 3;
                    while i < s.len() && s[i] != b'\'' {
                        i += 1;
                    }
                } else if s.get(i + 2) == Some(&b'\'') {
                    i += 2;
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth == 0 => {
                args.push(src[from..i].trim().to_string());
                break;
            }
            b')' | b']' | b'}' => depth -= 1,
            b',' if depth == 0 => {
                args.push(src[from..i].trim().to_string());
                from = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    args.retain(|a| !a.is_empty());
    args
}

/// The plain string literal `arg` holds, if it is one (`"text"`).
fn literal(arg: &str) -> Option<String> {
    let inner = arg.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains(['"', '\\'])).then(|| inner.to_string())
}

/// The literal argument number `index` of every call of `callee` in `src`
/// (`callee` ends with `(`; a call counts only where `callee` is not the tail
/// of a longer identifier, e.g. `Opts::new(` inside `HistogramOpts::new(`).
fn literal_arguments(src: &str, callee: &str, index: usize) -> Vec<String> {
    src.match_indices(callee)
        .filter(|(at, _)| {
            !callee.starts_with(is_word_char)
                || !src[..*at].chars().next_back().is_some_and(is_word_char)
        })
        .filter_map(|(at, _)| {
            call_arguments(src, at + callee.len())
                .get(index)
                .map(String::as_str)
                .and_then(literal)
        })
        .collect()
}

/// The source before its unit tests.
fn without_tests(src: &str) -> &str {
    src.find("#[cfg(test)]").map_or(src, |at| &src[..at])
}

/// Every `WF_` name in `text` (a maximal run of `[A-Z0-9_]` after `WF_`).
fn wf_names(text: &str) -> BTreeSet<String> {
    text.match_indices("WF_")
        .filter(|(at, _)| !text[..*at].chars().next_back().is_some_and(is_word_char))
        .map(|(at, _)| {
            let rest = &text[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches('_').to_string()
        })
        .filter(|name| name.len() > "WF_".len())
        .collect()
}

// ---------------------------------------------------------------------------
// Links.

/// The targets of the Markdown links `[text](target)` of `text`, outside
/// fenced code blocks, each with its line number.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    let mut fenced = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for (at, _) in line.match_indices("](") {
            let rest = &line[at + 2..];
            let mut depth = 0usize;
            let end = rest
                .char_indices()
                .find(|&(_, c)| match c {
                    '(' => {
                        depth += 1;
                        false
                    }
                    ')' if depth == 0 => true,
                    ')' => {
                        depth -= 1;
                        false
                    }
                    _ => false,
                })
                .map_or(rest.len(), |(i, _)| i);
            let inside = rest[..end].trim();
            // `(<target> "title")` or `(target "title")`.
            let target = match inside.strip_prefix('<') {
                Some(t) => t.split('>').next().unwrap_or_default(),
                None => inside.split_whitespace().next().unwrap_or_default(),
            };
            targets.push((n + 1, target.to_string()));
        }
    }
    targets
}

#[test]
fn links_in_the_readme_and_docs_stay_inside_the_repository() {
    let root = fs::canonicalize(root()).expect("the repository root");
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        let dir = root
            .join(&file)
            .parent()
            .expect("a directory")
            .to_path_buf();
        for (line, target) in link_targets(&text) {
            let lower = target.to_ascii_lowercase();
            if lower.starts_with("http://")
                || lower.starts_with("https://")
                || lower.starts_with("mailto:")
                || target.starts_with('#')
            {
                continue;
            }
            checked += 1;
            let path = target.split(['#', '?']).next().unwrap_or_default();
            if path.is_empty() {
                broken.push(format!("{file}:{line}: `{target}` has no path"));
                continue;
            }
            match fs::canonicalize(dir.join(path)) {
                Ok(resolved) if !resolved.starts_with(&root) => broken.push(format!(
                    "{file}:{line}: `{target}` points outside the repository ({})",
                    resolved.display()
                )),
                Ok(_) => {}
                Err(_) => broken.push(format!(
                    "{file}:{line}: `{target}` does not exist in the repository"
                )),
            }
        }
    }
    assert!(
        checked > 0,
        "no relative link found: is the link reader broken?"
    );
    assert!(
        broken.is_empty(),
        "{} broken link(s):\n  {}",
        broken.len(),
        broken.join("\n  ")
    );
}

#[test]
fn the_readme_and_docs_never_refer_to_files_outside_the_repository() {
    let mut files = vec!["README.md".to_string()];
    files.extend(files_under("docs"));
    let mut found = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(root().join(&file)) else {
            continue; // not text: nothing to read
        };
        for (n, line) in text.lines().enumerate() {
            for outside in ["../shared", "CONTRACT.md"] {
                if line.contains(outside) {
                    found.push(format!("{file}:{}: mentions `{outside}`", n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the repository's docs must stand alone; found:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_readme_links_to_the_reference() {
    let readme = read("README.md");
    assert!(
        link_targets(&readme)
            .iter()
            .any(|(_, t)| t == "docs/reference.md"),
        "README.md must link to docs/reference.md"
    );
}

// ---------------------------------------------------------------------------
// Configuration.

/// The `WF_*` variables the service reads: its table of variables.
fn config_variables() -> BTreeSet<String> {
    webhook_fanout::config::VARIABLES
        .iter()
        .map(|v| v.name.to_string())
        .collect()
}

/// The rows of the reference's configuration table: variable and default
/// column, as written.
fn reference_configuration_table() -> Vec<(String, String)> {
    let reference = read(REFERENCE);
    let section = reference
        .split("\n## ")
        .find(|s| s.starts_with("Configuration"))
        .expect("the reference has a `## Configuration` section");
    section
        .lines()
        .filter(|l| l.trim_start().starts_with("| `WF_"))
        .map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split('|').collect();
            (
                cells[0].trim().trim_matches('`').to_string(),
                cells.get(1).map_or("", |c| c.trim()).to_string(),
            )
        })
        .collect()
}

#[test]
fn the_reference_s_configuration_table_has_every_variable_with_its_default() {
    let rows = reference_configuration_table();
    let mut wrong = Vec::new();
    for v in webhook_fanout::config::VARIABLES {
        let row = rows.iter().find(|(name, _)| name == v.name);
        match (row, v.default) {
            (None, _) => wrong.push(format!("{}: no row", v.name)),
            (Some((_, cell)), Some(default)) if *cell != format!("`{default}`") => {
                wrong.push(format!(
                    "{}: the table says {cell}, the service defaults to `{default}`",
                    v.name
                ))
            }
            (Some((_, cell)), None) if cell.contains('`') => wrong.push(format!(
                "{}: the table gives the default {cell}, the service leaves it unset",
                v.name
            )),
            _ => {}
        }
    }
    let known = config_variables();
    for (name, _) in &rows {
        if !known.contains(name) {
            wrong.push(format!(
                "{name}: a row for a variable the service does not read"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{REFERENCE} `## Configuration`:\n{}",
        wrong.join("\n")
    );
}

/// The README points to the reference for settings instead of repeating
/// the table (one source: a second copy drifts).
#[test]
fn the_readme_does_not_repeat_the_configuration_table() {
    let readme = read("README.md");
    let rows = readme
        .lines()
        .filter(|l| l.trim_start().starts_with("| `WF_"))
        .count();
    assert_eq!(
        rows, 0,
        "README.md has {rows} configuration rows; link to the reference"
    );
}

/// The Kubernetes configmap sets only variables the service reads, each to
/// a value it accepts.
#[test]
fn the_configmap_sets_only_known_variables_to_valid_values() {
    let text = read("deploy/kubernetes/configmap.yaml");
    let data = text
        .split("\ndata:\n")
        .nth(1)
        .expect("deploy/kubernetes/configmap.yaml has a data: section");
    let known = config_variables();
    let mut env = std::collections::HashMap::new();
    for line in data.lines().filter(|l| l.starts_with("  WF_")) {
        let (name, value) = line.trim().split_once(':').expect("name: value");
        let value = value.trim().trim_matches('"');
        assert!(
            known.contains(name),
            "the configmap sets {name}, which the service does not read"
        );
        env.insert(name.to_string(), value.to_string());
    }
    assert!(
        env.len() >= 10,
        "read only {env:?} from the configmap: is the reader broken?"
    );
    if let Err(e) = webhook_fanout::Settings::from_map(&env) {
        panic!("the configmap's values do not start the service: {e}");
    }
}

#[test]
fn every_variable_the_config_reads_is_documented() {
    let variables = config_variables();
    let reference = read(REFERENCE);
    assert_all_present(
        "WF_ variables the service reads",
        "src/config/mod.rs",
        &variables,
        |name| mentions(&reference, name),
    );
}

#[test]
fn the_reference_names_no_variable_the_config_does_not_read() {
    let variables = config_variables();
    let documented = wf_names(&read(REFERENCE));
    let stale: Vec<&String> = documented.difference(&variables).collect();
    assert!(
        stale.is_empty(),
        "{REFERENCE} names WF_ variables that src/config.rs does not read: {stale:?}"
    );
}

// ---------------------------------------------------------------------------
// Metrics.

/// Every metric family the service registers, as `/metrics` renders it,
/// plus the names declared in src/metrics.rs (a labelled family appears in
/// the rendering only once it has a series).
fn metric_names() -> BTreeSet<String> {
    let catalogue = Catalogue::embedded();
    let metrics = Metrics::new(
        catalogue.entries().iter().map(|e| e.event_type.as_str()),
        Duration::from_secs(10),
    );
    metrics.register_tiers(["10s"]);
    metrics.set_queue_depth("ingest", 0);
    let rendered: BTreeSet<String> = metrics
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("webhooks_"))
        .map(str::to_string)
        .collect();
    // Labelled families appear in the rendering only once they have a
    // series: the table's names cover them.
    let declared = webhook_fanout::metrics::FAMILIES
        .iter()
        .map(|name| format!("webhooks_{name}"));
    let names: BTreeSet<String> = rendered.iter().cloned().chain(declared).collect();
    assert!(
        rendered.len() >= 10 && names.contains("webhooks_deliveries_total"),
        "found only {names:?}: is the reader broken?"
    );
    names
}

#[test]
fn every_metric_is_documented() {
    let reference = read(REFERENCE);
    assert_all_present(
        "metrics",
        "Metrics::render and src/metrics.rs",
        &metric_names(),
        |name| mentions(&reference, name),
    );
}

// ---------------------------------------------------------------------------
// Admin API error codes.

/// Every error code the admin API can answer with: the code arguments of
/// `ApiError::new` / `ApiError::invalid` in src/admin/*.rs, of `Self::new` /
/// `Self::invalid` in error.rs, and of the request field getters, which
/// hand their code to `ApiError::invalid`.
fn api_error_codes() -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    for file in files_under("src/admin")
        .into_iter()
        .filter(|f| f.ends_with(".rs"))
    {
        let src = read(&file);
        let src = without_tests(&src);
        let mut callees = vec![
            "ApiError::new(",
            "ApiError::invalid(",
            ".string(",
            ".strings(",
            ".boolean(",
        ];
        if file.ends_with("/error.rs") {
            callees.extend(["Self::new(", "Self::invalid("]);
        }
        for callee in callees {
            codes.extend(
                literal_arguments(src, callee, 1)
                    .into_iter()
                    .filter(|c| c.chars().all(|c| c.is_ascii_lowercase() || c == '_')),
            );
        }
    }
    assert!(
        codes.len() >= 15 && codes.contains("unauthorized") && codes.contains("invalid_json"),
        "found only {codes:?} in src/admin: is the reader broken?"
    );
    codes
}

#[test]
fn every_api_error_code_is_documented() {
    let reference = read(REFERENCE);
    assert_all_present(
        "admin API error codes",
        "src/admin/*.rs",
        &api_error_codes(),
        |code| reference.contains(&format!("`{code}`")),
    );
}

// ---------------------------------------------------------------------------
// Envelope, catalogue, queues.

#[test]
fn every_reject_code_and_event_type_is_documented() {
    let reference = read(REFERENCE);
    let codes: BTreeSet<String> = RejectReason::ALL
        .iter()
        .map(|r| r.code().to_string())
        .chain(JOB_REJECT_REASONS.iter().map(|r| r.to_string()))
        .collect();
    assert_all_present(
        "reject codes",
        "RejectReason::ALL and JOB_REJECT_REASONS",
        &codes,
        |c| reference.contains(&format!("`{c}`")),
    );
    let types: BTreeSet<String> = Catalogue::embedded()
        .entries()
        .iter()
        .map(|e| e.event_type.clone())
        .collect();
    assert_all_present("event types", "the embedded catalogue", &types, |t| {
        reference.contains(&format!("`{t}`"))
    });
}

/// The suffixes `Names` appends to the namespace in src/broker/topology.rs
/// (`format!("{}.<suffix>", self.ns)`), placeholders written `<delay>`.
fn topology_suffixes() -> BTreeSet<String> {
    let src = read("src/broker/topology.rs");
    let start = src
        .find("impl Names")
        .expect("topology.rs has `impl Names`");
    let body = &src[start..];
    let body = &body[..body.find("\n}").unwrap_or(body.len())];
    let suffixes: BTreeSet<String> = literal_arguments(body, "format!(", 0)
        .into_iter()
        .filter_map(|f| f.strip_prefix("{}.").map(str::to_string))
        .map(|suffix| {
            let mut out = String::new();
            let mut rest = suffix.as_str();
            while let Some(open) = rest.find('{') {
                let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
                let placeholder = &rest[open + 1..close];
                let shown = if placeholder == "label" {
                    "delay"
                } else {
                    placeholder
                };
                out.push_str(&rest[..open]);
                out.push_str(&format!("<{shown}>"));
                rest = &rest[(close + 1).min(rest.len())..];
            }
            out.push_str(rest);
            out
        })
        .collect();
    assert!(
        suffixes.len() >= 6 && suffixes.contains("events"),
        "found only {suffixes:?} in src/broker/topology.rs: is the reader broken?"
    );
    suffixes
}

#[test]
fn every_exchange_and_queue_is_documented() {
    let reference = read(REFERENCE);
    let names: BTreeSet<String> = topology_suffixes()
        .into_iter()
        .map(|s| format!("{{ns}}.{s}"))
        .collect();
    assert_all_present(
        "exchange and queue names",
        "Names in src/broker/topology.rs",
        &names,
        |name| mentions(&reference, name),
    );
}

// ---------------------------------------------------------------------------
// The readers themselves.

#[test]
fn the_readers_read_what_they_should() {
    let src = r#"ApiError::new(StatusCode::X, "a_code", format!("x {}, y", f(1, 2)));
        ApiError::invalid("field", "b_code", r"raw, text");
        fn new(status: StatusCode, code: &'static str) {}
        x.strip_prefix('"'); ApiError::new(s, "c_code", '(', '\'', '\n');"#;
    assert_eq!(
        literal_arguments(src, "ApiError::new(", 1),
        ["a_code", "c_code"]
    );
    assert_eq!(literal_arguments(src, "ApiError::invalid(", 1), ["b_code"]);
    assert!(literal_arguments("HistogramOpts::new(\"x\")", "Opts::new(", 0).is_empty());
    assert_eq!(
        link_targets("[a](b.md) [c](<d e.md>) [f](g.md \"t\")\n```\n[x](y)\n```\n"),
        [
            (1, "b.md".to_string()),
            (1, "d e.md".to_string()),
            (1, "g.md".to_string())
        ]
    );
    assert!(mentions("`{ns}.deliver` queue", "{ns}.deliver"));
    assert!(!mentions("`{ns}.deliveries`", "{ns}.deliver"));
    assert!(!mentions("WF_ALLOW_HTTP_X", "WF_ALLOW_HTTP"));
    assert_eq!(
        wf_names("`WF_A_B`, WF_* and XWF_C"),
        BTreeSet::from(["WF_A_B".to_string()])
    );
}

/// The filter examples for receivers (integrating.md, "Filtering events")
/// are filters the API accepts, and there are five of them.
#[test]
fn the_filter_examples_in_the_docs_are_accepted() {
    let text = read("docs/integrating.md");
    let section = text
        .split("## Filtering events")
        .nth(1)
        .expect("integrating.md has a section on filtering events");
    // The examples are the untagged code blocks (the curl call is `sh`).
    let examples: Vec<String> = section
        .split("```")
        .skip(1)
        .step_by(2)
        .filter(|block| block.starts_with('\n'))
        .map(|block| block.trim().to_string())
        .collect();
    assert_eq!(examples.len(), 5, "{examples:?}");
    for example in &examples {
        let compiled = webhook_fanout::filter::Filter::compile(example);
        assert!(compiled.is_ok(), "{example}: {:?}", compiled.err());
    }
}
