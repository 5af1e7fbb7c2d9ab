//! The library's layers run one way: a module may use modules of its own layer or
//! lower ones, never a higher one, and the modules of one layer never use each other
//! in a loop. This test reads every file of `src/` and fails naming the file, the
//! line and the two layers of any import that breaks the rule, so a change that adds
//! one meets it at `make test`. The table below is the one docs/layers.md describes;
//! a new top-level module must be placed in it (lib.rs is checked to declare no
//! module the table lacks).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules of the library, lowest layer first.
const LAYERS: &[(&str, u8)] = &[
    // 1: leaf utilities
    ("error", 1),
    ("sys", 1),
    ("fsutil", 1),
    ("secret", 1),
    ("listen", 1),
    ("clock", 1),
    ("progress", 1),
    ("lock", 1),
    ("command", 1),
    // 2: formats and maths; config (the schema) sits beside them
    ("diff", 2),
    ("journal", 2),
    ("nbd", 2),
    ("replica", 2),
    ("config", 2),
    // 3: volume drivers
    ("volume", 3),
    ("splitter", 3),
    // 4: what moves journal data
    ("cycle", 4),
    ("export", 4),
    ("restore", 4),
    ("replay", 4),
    ("grid", 4),
    // 5: the daemon
    ("schedule", 5),
];

/// The library items `lib.rs` re-exports at the crate root, and their module.
const ROOT_ITEMS: &[(&str, &str)] = &[("Error", "error"), ("Result", "error")];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
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

/// `text` with comments and the insides of string and char literals blanked (each
/// byte replaced by a space, newlines kept, so line numbers stay right): a `crate::`
/// in a doc comment or a message is not an import, and `"s3://"` starts no comment.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (1, i + 2);
                while j < b.len() && depth > 0 {
                    if b[j..].starts_with(b"/*") {
                        depth += 1;
                        j += 1;
                    } else if b[j..].starts_with(b"*/") {
                        depth -= 1;
                        j += 1;
                    }
                    j += 1;
                }
                blank(&mut out, i, j.min(b.len()));
                i = j;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let body = i + 2 + hashes;
                let end = b[body..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |n| body + n + close.len());
                blank(&mut out, body, end.saturating_sub(close.len()).max(body));
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i + 1, j.min(b.len()));
                i = j + 1;
            }
            // A char literal ('x', '\n', '\''), not a lifetime ('a).
            b'\'' if b.get(i + 1) == Some(&b'\\') => {
                let end = b[i + 3..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map_or(b.len(), |n| i + 3 + n);
                blank(&mut out, i + 1, end);
                i = end + 1;
            }
            b'\'' if b.get(i + 2) == Some(&b'\'') => {
                blank(&mut out, i + 1, i + 2);
                i += 3;
            }
            _ => i += 1,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first names of the path that starts at `rest`: `a` of `a::b`, and each name of
/// a group `{a, b::c, d::{e, f}}`, with their byte offsets in `rest`.
fn first_names(rest: &str) -> Vec<(usize, String)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = rest.strip_prefix('{') else {
        return vec![(0, ident(rest))];
    };
    let mut out = Vec::new();
    let (mut depth, mut name_start) = (0, true);
    for (k, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => name_start = true,
            c if c.is_whitespace() => {}
            _ if name_start && depth == 0 => {
                name_start = false;
                out.push((1 + k, ident(&group[k..])));
            }
            _ => {}
        }
    }
    out
}

/// The top-level modules that paths in `text`, the file of a module `depth` levels
/// below the crate root (1 for `src/a.rs` and `src/a/mod.rs`), name, with the line of
/// each: `crate::a::…`, and `super::…` chains that climb to the crate root.
fn crate_refs(text: &str, depth: usize) -> Vec<(usize, String)> {
    let code = code_only(text);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut at = 0;
    while at < code.len() {
        let rest = &code[at..];
        let before = code[..at].chars().next_back();
        let starts_path =
            !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == ':');
        if starts_path && rest.starts_with("crate::") {
            let from = at + "crate::".len();
            for (k, name) in first_names(&code[from..]) {
                out.push((line_of(from + k), name));
            }
            at = from;
        } else if starts_path && rest.starts_with("super::") {
            let mut from = at;
            let mut ups = 0;
            while code[from..].starts_with("super::") {
                from += "super::".len();
                ups += 1;
            }
            // Climbing to the root, the next name is a top-level module; short of it
            // the path stays inside this module. (An inline `mod tests` sits one level
            // deeper than its file; its `super::` stays in the file's module, which
            // the names below are then checked against harmlessly.)
            if ups >= depth {
                for (k, name) in first_names(&code[from..]) {
                    if layer(&name).is_some() || ROOT_ITEMS.iter().any(|(i, _)| *i == name) {
                        out.push((line_of(from + k), name));
                    }
                }
            }
            at = from;
        } else {
            at += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

/// The modules `lib.rs` declares (`mod x;`, `pub mod x;`).
fn declared_modules(lib: &str) -> Vec<String> {
    code_only(lib)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            l.strip_prefix("mod ")
                .map(|m| m.trim_end_matches(';').trim().to_string())
        })
        .collect()
}

#[test]
fn no_module_imports_from_a_higher_layer_or_in_a_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        // The binary (main.rs, cli/) sits on top and uses the library as `cascade::`.
        if top == "main" || top == "cli" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        // lib.rs declares the modules: each must have a layer.
        if top == "lib" {
            for m in declared_modules(&text) {
                if layer(&m).is_none() {
                    wrong.push(format!(
                        "src/lib.rs: module `{m}` is in no layer; add it to LAYERS in tests/layers.rs and to docs/layers.md"
                    ));
                }
            }
            continue;
        }
        // How deep the file's module sits: src/a.rs and src/a/mod.rs are 1.
        let depth = rel.components().count() - usize::from(rel.ends_with("mod.rs"));
        let Some(mine) = layer(&top) else {
            wrong.push(format!(
                "src/{}: module `{top}` is in no layer; add it to LAYERS in tests/layers.rs and to docs/layers.md",
                rel.display()
            ));
            continue;
        };
        for (line, name) in crate_refs(&text, depth) {
            let module = ROOT_ITEMS
                .iter()
                .find(|(item, _)| *item == name)
                .map_or(name.as_str(), |(_, m)| m);
            if module == top || name == "self" {
                continue;
            }
            let Some((target, theirs)) = LAYERS.iter().find(|(m, _)| *m == module) else {
                wrong.push(format!(
                    "src/{}:{line}: `crate::{name}` is not a module of the layer table",
                    rel.display()
                ));
                continue;
            };
            if *theirs > mine {
                wrong.push(format!(
                    "src/{}:{line}: `{top}` (layer {mine}) uses `{module}` (layer {theirs}), a higher layer",
                    rel.display()
                ));
            }
            let from = LAYERS.iter().find(|(m, _)| *m == top).unwrap().0;
            edges.entry(from).or_default().insert(target);
        }
    }
    // Same-layer uses must not form a loop: walk from every module.
    for (start, _) in LAYERS {
        let mut stack = vec![vec![*start]];
        while let Some(path) = stack.pop() {
            let last = *path.last().unwrap();
            for next in edges.get(last).into_iter().flatten() {
                if next == start {
                    wrong.push(format!(
                        "modules use each other in a loop: {} -> {start}",
                        path.join(" -> ")
                    ));
                } else if !path.contains(next) {
                    let mut p = path.clone();
                    p.push(next);
                    stack.push(p);
                }
            }
        }
        if !wrong.is_empty() {
            break;
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

fn want(v: &[(usize, &str)]) -> Vec<(usize, String)> {
    v.iter().map(|(l, m)| (*l, m.to_string())).collect()
}

#[test]
fn the_reader_finds_single_grouped_and_nested_imports() {
    let text = "use crate::journal::Journal;\nuse crate::{\n    clock::now_ns,\n    replica::{Bucket, Manifest},\n};\n// crate::export in a comment\nlet x = crate::volume::f(); foo_crate::bar();\n";
    assert_eq!(
        crate_refs(text, 1),
        want(&[(1, "journal"), (3, "clock"), (4, "replica"), (7, "volume")])
    );
}

#[test]
fn the_reader_skips_strings_and_comments_and_follows_super_to_the_root() {
    let text = "let u = \"s3://b\"; let c = crate::cycle::X;\n/* crate::export\n crate::schedule */ let s = \"crate::restore\";\nlet r = r#\"crate::replay\"#; let ch = '\\'';\nuse super::super::export::Y;\nuse super::sibling;\n";
    // From src/a/b.rs (depth 2), super::super:: is the crate root; super:: is `a`.
    assert_eq!(crate_refs(text, 2), want(&[(1, "cycle"), (5, "export")]));
    // From src/a.rs (depth 1), super:: is already the root; `sibling` is no module.
    assert_eq!(crate_refs(text, 1), want(&[(1, "cycle"), (5, "export")]));
    assert_eq!(
        declared_modules("// 1\npub mod clock;\nmod lock;\npub use error::Error;\n"),
        ["clock", "lock"]
    );
}
