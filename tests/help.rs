//! `--help` is the manual: every verb, and every argument and flag of every verb, says
//! what it is for.
use std::process::Command;

fn help(path: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success(), "{path:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// The subcommands a help page lists (without `help`).
fn subcommands(page: &str) -> Vec<String> {
    page.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn every_argument_of_every_verb_is_explained() {
    let mut pages = vec![vec![]];
    let mut checked = 0;
    let mut missing = Vec::new();
    while let Some(path) = pages.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let page = help(&args);
        for sub in subcommands(&page) {
            let mut p = path.clone();
            p.push(sub);
            pages.push(p);
        }
        let lines: Vec<&str> = page.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            let indent = l.len() - t.len();
            let is_arg = (2..=6).contains(&indent) && (t.starts_with('-') || t.starts_with('<'));
            if is_arg {
                if lines.get(i + 1).is_none_or(|n| n.trim().is_empty()) {
                    missing.push(format!("cascade {} {t}", args.join(" ")));
                }
                checked += 1;
            }
        }
    }
    assert!(
        missing.is_empty(),
        "no help text for:\n{}",
        missing.join("\n")
    );
    // The walk found the verbs: a dozen pages, each with its own and the global flags.
    assert!(checked > 60, "only {checked} arguments found");
}
