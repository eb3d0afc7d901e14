//! The binary's modules are layered: every `crate::` path in a file of `src/` names a
//! module of a lower layer than the file's own, so there are no cycles and nothing
//! imports the composition root (`node`). Only `http` speaks HTTP: axum and hyper are
//! used there alone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    // Clock, ids, secrets, signals, TLS set-up: imports nothing of the crate.
    &["support"],
    &["limits", "metrics"],
    // The cores: packaging and the spool, pull-through, offline packaging.
    &["origin", "edge", "package"],
    // What feeds or watches them: ingest listeners, SDI capture, endpoint health.
    &["ingest", "sdi", "endpoint"],
    // The only axum user: viewer routes, admin API, dashboard, the listeners.
    &["http"],
    // The composition root, the admin CLI, and the fuzz targets' entry points.
    &["node", "cli", "fuzzing"],
    // The command (the library's root; the binary calls it).
    &["lib", "main"],
];

/// Modules that may name axum, axum_server or hyper (outside their tests, which may
/// stand up a server of their own).
const HTTP_SPEAKERS: &[&str] = &["http"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The crate's top-level modules a source text names through `crate::`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::X, b}`: the first segment of each entry.
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for entry in inner.split(',') {
                let name: String = entry
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Source text without line comments (docs mention modules by path) and without its
/// test module (tests may use anything).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src/");
    let first = rel.components().next().expect("a path");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// Every rule broken by `module`'s source `text`.
fn violations(module: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Some(own) = layer_of(module) else {
        return vec![format!("{module} is in no layer: add it to LAYERS")];
    };
    let code = code_of(text);
    for used in crate_paths(&code) {
        if used == module {
            continue;
        }
        match layer_of(&used) {
            Some(l) if l < own => {}
            Some(_) => found.push(format!("{module} uses {used}, which is not below it")),
            None => found.push(format!("{module} uses {used}, which is in no layer")),
        }
    }
    let speaks_http = ["axum::", "axum_server::", "hyper::", "hyper_util::"]
        .iter()
        .any(|p| code.contains(p));
    if speaks_http && !HTTP_SPEAKERS.contains(&module) {
        found.push(format!("{module} uses axum or hyper: only http may"));
    }
    found
}

#[test]
fn every_import_in_src_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "src/ has {} files", files.len());
    let mut broken = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).expect("readable");
        for v in violations(&module, &text) {
            broken.push(format!(
                "{}: {v}",
                file.strip_prefix(&src).expect("under src/").display()
            ));
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn the_check_sees_upward_and_unknown_imports() {
    assert!(violations("origin", "use crate::support::now_ms;").is_empty());
    assert_eq!(
        violations("origin", "use crate::{metrics::Metrics, http::hls};"),
        ["origin uses http, which is not below it"]
    );
    assert_eq!(
        violations("edge", "fn f() { crate::origin::x() }"),
        ["edge uses origin, which is not below it"]
    );
    assert_eq!(
        violations("metrics", "let x = crate::serve::now_ms();"),
        ["metrics uses serve, which is in no layer"]
    );
    assert!(violations("origin", "// see crate::http::hls").is_empty());
    assert_eq!(
        violations("ingest", "use axum::Router;"),
        ["ingest uses axum or hyper: only http may"]
    );
    assert_eq!(
        violations("node", "use axum_server::Handle;"),
        ["node uses axum or hyper: only http may"]
    );
    assert!(violations(
        "edge",
        "fn f() {}\n#[cfg(test)]\nmod tests {\n use axum::Router;\n}"
    )
    .is_empty());
    assert_eq!(
        violations("node", "use crate::cli::x;"),
        ["node uses cli, which is not below it"]
    );
}
