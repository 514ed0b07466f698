//! The layer check: every module under `src/` imports only from its own layer and the layers
//! below it (the order is written at the top of `src/lib.rs` and in the README's "Layout").
//!
//! How it reads the code: for each file it strips `//` comments, then takes every `crate::`
//! and `super::` path, expands `{...}` groups, and resolves the path to the longest prefix
//! that is a module file. The module's layer is its first path segment.
//!
//! Limits (what it does not see): paths built by macros (`$crate::...`), names brought in by a
//! glob (`use crate::x::*` counts as an import of `x` only), and `//` inside string literals
//! (the rest of that line is skipped). Inline modules are assumed to be the unit tests at the
//! end of a file: a `super::` after the first `mod name {` line names the file's module. None of
//! these is used across layers today.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top. A module of layer `i` may import from layers `0..=i`. The last entry holds
/// the crate root (`lib.rs`) and the top-level files that start and expose everything.
const LAYERS: &[&[&str]] = &[
    &["base"],
    &["pal"],
    &["config"],
    &["mem"],
    &["device"],
    &["fault"],
    &["heap"],
    &["tiering"],
    &["api"],
    &["report"],
    &["", "init", "allocator", "malloc"],
];

fn rank(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

/// `src/heap/span.rs` → `heap::span`; `src/heap/mod.rs` → `heap`; `src/lib.rs` → ``.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Expands the use tree at the start of `s` (after `crate::`) into full paths.
fn expand(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('{') {
        let mut out = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, ch) in rest.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    out.extend(expand(&rest[start..i]));
                    return out;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(expand(&rest[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        return out;
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    if end == 0 {
        return Vec::new();
    }
    let name = s[..end].to_string();
    let Some(rest) = s[end..].strip_prefix("::") else {
        return vec![vec![name]];
    };
    let inner = expand(rest);
    if inner.is_empty() {
        // A glob (`crate::x::*`): an import of `x`.
        return vec![vec![name]];
    }
    inner
        .into_iter()
        .map(|mut p| {
            p.insert(0, name.clone());
            p
        })
        .collect()
}

/// Every module path `code` (the text of module `module`) imports, resolved against `modules`.
fn imports(module: &str, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let parent: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    let mut out = BTreeSet::new();
    // `super::` after an inline `mod name {` (the unit tests) names the file's own module.
    let inline_mod = code
        .match_indices("\nmod ")
        .map(|(at, _)| at)
        .find(|&at| {
            code[at + 1..]
                .lines()
                .next()
                .unwrap()
                .trim_end()
                .ends_with('{')
        })
        .unwrap_or(code.len());
    for prefix in ["crate::", "super::"] {
        for (at, _) in code.match_indices(prefix) {
            let base = match prefix {
                "crate::" => &parent[..0],
                _ if at > inline_mod => &parent[..],
                _ => &parent[..parent.len().saturating_sub(1)],
            };
            // `self::super::` and the like are not used; a preceding identifier character means
            // this is part of a longer name (`my_crate::`).
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for path in expand(&code[at + prefix.len()..]) {
                let full: Vec<String> = base.iter().map(|s| s.to_string()).chain(path).collect();
                let resolved = (0..=full.len())
                    .rev()
                    .map(|i| full[..i].join("::"))
                    .find(|m| modules.contains(m))
                    .unwrap_or_default();
                out.insert(resolved);
            }
        }
    }
    out
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut wrong = Vec::new();
    for f in &files {
        let m = module_of(&src, f);
        let Some(own) = rank(top(&m)) else {
            wrong.push(format!("{m}: its folder has no place in LAYERS"));
            continue;
        };
        for dep in imports(&m, &std::fs::read_to_string(f).unwrap(), &modules) {
            let theirs = rank(top(&dep)).unwrap_or(usize::MAX);
            if theirs > own {
                wrong.push(format!("{m} (layer {own}) imports {dep} (layer {theirs})"));
            }
        }
    }
    assert!(
        files.len() > 40,
        "read {} files: wrong folder?",
        files.len()
    );
    assert!(
        wrong.is_empty(),
        "imports that point up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_reader_sees_grouped_inline_and_relative_paths() {
    let modules: BTreeSet<String> = ["", "heap", "heap::span", "mem", "mem::pagemap", "tiering"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let code = "use crate::{mem::pagemap::{self, Entry}, tiering};\n\
                // crate::report is only mentioned here\n\
                fn f() { crate::heap::span::flush(); super::Thing::new(); }";
    let got = imports("heap::span", code, &modules);
    let want: BTreeSet<String> = ["mem::pagemap", "tiering", "heap::span", "heap"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want);
    assert_eq!(rank("tiering"), Some(7));
    assert!(
        rank("tiering") > rank("heap"),
        "so heap -> tiering is flagged"
    );
}
