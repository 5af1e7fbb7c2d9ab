//! The library's layers run one way: a module may use modules of its own layer or
//! lower ones, never a higher one, and the modules of one layer never use each other
//! in a loop. This test reads every file of `src/` and fails naming the file, the
//! line and the two layers of any import that breaks the rule, so a change that adds
//! one meets it at `make test`. The table below is the layering README.md describes;
//! a new top-level module must be placed in it.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules of the library, lowest layer first.
const LAYERS: &[(&str, u8)] = &[
    // 1: leaf utilities
    ("error", 1),
    ("sys", 1),
    ("fsutil", 1),
    ("clock", 1),
    ("progress", 1),
    ("lock", 1),
    ("command", 1),
    // 2: formats and maths; config (the schema) sits beside them
    ("diff", 2),
    ("journal", 2),
    ("replica", 2),
    ("config", 2),
    // 3: volume drivers
    ("volume", 3),
    // 4: what moves journal data
    ("cycle", 4),
    ("export", 4),
    ("restore", 4),
    ("replay", 4),
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

/// The code of a line without its `//` comment (doc comments name modules freely).
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

/// The top-level modules `crate::…` paths in `text` name, with the line of each:
/// `crate::a::b`, and each name of a group `crate::{a, b::c, d::{e, f}}`.
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    // Joined so that a `use crate::{…}` group may span lines; each byte keeps its line.
    let mut joined = String::new();
    let mut line_of = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for c in code(line).chars().chain(std::iter::once('\n')) {
            joined.push(c);
            line_of.resize(joined.len(), n + 1);
        }
    }
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut at = 0;
    while let Some(i) = joined[at..].find("crate::") {
        let start = at + i;
        at = start + "crate::".len();
        // `cascade::crate::…` does not exist, but `$crate::` and `foo_crate::` must not count.
        let before = joined[..start].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &joined[at..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut name_start = true;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => name_start = true,
                    c if c.is_whitespace() => {}
                    _ if name_start && depth == 0 => {
                        name_start = false;
                        out.push((line_of[at + 1 + k], ident(&group[k..])));
                    }
                    _ => {}
                }
            }
        } else {
            out.push((line_of[at], ident(rest)));
        }
    }
    out
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
        // The binary (main.rs, cli/) sits on top and uses the library as `cascade::`;
        // lib.rs only declares the modules.
        if top == "main" || top == "cli" || top == "lib" {
            continue;
        }
        let Some(mine) = layer(&top) else {
            wrong.push(format!(
                "src/{}: module `{top}` is in no layer; add it to LAYERS in tests/layers.rs and to README.md's layer list",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, name) in crate_refs(&text) {
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

#[test]
fn the_reader_finds_single_grouped_and_nested_imports() {
    let text = "use crate::journal::Journal;\nuse crate::{\n    clock::now_ns,\n    replica::{Bucket, Manifest},\n};\n// crate::export in a comment\nlet x = crate::volume::f(); foo_crate::bar();\n";
    let got: Vec<(usize, String)> = crate_refs(text);
    let want: Vec<(usize, String)> = [(1, "journal"), (3, "clock"), (4, "replica"), (7, "volume")]
        .iter()
        .map(|(l, m)| (*l, m.to_string()))
        .collect();
    assert_eq!(got, want);
}
