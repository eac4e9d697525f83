//! Comments cite the repository's own documentation (`docs/`), never a file
//! a person who clones the project does not have: the product contract kept
//! beside the repository, or anything else in the folder next to it.

use std::path::{Path, PathBuf};

/// The folders and files whose text is checked, from the repository root.
const CHECKED: [&str; 8] = [
    "api",
    "bench",
    "tests",
    "entity",
    "migration",
    ".ci",
    "schema.graphql",
    "Cargo.toml",
];

/// Vendored third-party files, not ours to word.
const SKIPPED: [&str; 1] = ["api/assets"];

/// What a citation of an outside file looks like. Spelled in pieces so that
/// this file does not cite what it looks for.
fn needles() -> [String; 2] {
    [["api", ".md"].concat(), ["..", "/shared"].concat()]
}

fn files_under(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let path = root.join(rel);
    if SKIPPED.iter().any(|s| rel == Path::new(s)) {
        return;
    }
    if path.is_dir() {
        if rel.file_name().is_some_and(|n| n == "target") {
            return;
        }
        let mut entries: Vec<_> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()))
            .map(|e| e.expect("a directory entry").file_name())
            .collect();
        entries.sort();
        for name in entries {
            files_under(root, &rel.join(name), out);
        }
    } else if path.is_file() {
        out.push(rel.to_owned());
    }
}

#[test]
fn source_files_cite_no_file_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository root")
        .to_owned();
    let mut files = Vec::new();
    for top in CHECKED {
        assert!(root.join(top).exists(), "{} is missing", root.join(top).display());
        files_under(&root, Path::new(top), &mut files);
    }
    assert!(
        files.iter().any(|f| f.ends_with("access.rs")),
        "the walk found the sources: {files:?}"
    );
    let needles = needles();
    let mut found = Vec::new();
    for rel in &files {
        // Text files only: a binary file cites nothing.
        let Ok(text) = std::fs::read_to_string(root.join(rel)) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_ascii_lowercase();
            if needles.iter().any(|needle| lower.contains(needle.as_str())) {
                found.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "these lines cite a file outside the repository; cite docs/ instead (docs/README.md lists its pages):\n{}",
        found.join("\n")
    );
}
