//! The server's modules form layers whose imports only point down, and no
//! two files import each other, directly or around a circle. Read from the
//! source: every `crate::…`, `super::…` and `self::…` path outside test
//! modules is an arrow from its file to the module it names.
//!
//! Run it alone with `cargo test -p workflows-api --test layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules from the bottom up: a module may use its own layer's
/// and lower layers' modules, never a higher one's. A new top-level module
/// must be given its place here.
const LAYERS: &[&[&str]] = &[
    // Plain settings, the error type every layer returns, and the clock.
    &["clock", "config", "error", "telemetry"],
    // Plain values and rules: no database, no GraphQL, no I/O.
    &["core"],
    // Shared services: tokens, the database pool, metrics, the event bus.
    &["auth", "db", "metrics", "events"],
    // Reads and writes of the tables, and who may do what.
    &["domain"],
    // Runs: the runner, agents, the relay between instances.
    &["engine"],
    // Background work: schedules, retention.
    &["jobs"],
    // The API's shape: types, resolvers, loaders, admission, fan-out.
    &["graphql"],
    // The edge: router, WebSocket, GraphiQL, health.
    &["http"],
];

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

/// Module path (`domain::steps`) → file, for every file under `src`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<String, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    parts.pop();
                }
                out.insert(parts.join("::"), path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// The source without comments and `#[cfg(test)]` modules. String literals
/// stay: attributes name functions in them (`complexity = "super::query::…"`).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// The paths of a use-tree starting at `s` (just after `crate::` or the
/// like): `a::b::{c, d::{e, f}}` gives `a::b::c`, `a::b::d::e`, `a::b::d::f`.
fn use_tree(s: &str) -> Vec<Vec<String>> {
    fn tree(s: &[u8], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            while *i < s.len() && s[*i].is_ascii_whitespace() {
                *i += 1;
            }
            if *i < s.len() && s[*i] == b'{' {
                *i += 1;
                loop {
                    tree(s, i, &path, out);
                    while *i < s.len() && s[*i].is_ascii_whitespace() {
                        *i += 1;
                    }
                    match s.get(*i) {
                        Some(b',') => *i += 1,
                        Some(b'}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    while *i < s.len() && s[*i].is_ascii_whitespace() {
                        *i += 1;
                    }
                    if s.get(*i) == Some(&b'}') {
                        *i += 1;
                        return;
                    }
                }
            }
            let start = *i;
            while *i < s.len() && (s[*i].is_ascii_alphanumeric() || s[*i] == b'_' || s[*i] == b'*') {
                *i += 1;
            }
            if *i > start {
                path.push(String::from_utf8_lossy(&s[start..*i]).into_owned());
            }
            if s[*i..].starts_with(b"::") {
                *i += 2;
                continue;
            }
            out.push(path);
            return;
        }
    }
    let mut out = Vec::new();
    tree(s.as_bytes(), &mut 0, &[], &mut out);
    out
}

/// Arrows from each module to the modules its code names.
fn arrows(mods: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let mut arrows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, file) in mods {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let here: Vec<String> = if name.is_empty() {
            Vec::new()
        } else {
            name.split("::").map(str::to_owned).collect()
        };
        let bytes = code.as_bytes();
        for kw in ["crate::", "super::", "self::"] {
            let mut from = 0;
            while let Some(at) = code[from..].find(kw) {
                let at = from + at;
                from = at + kw.len();
                let boundary = at == 0
                    || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':');
                if !boundary {
                    continue;
                }
                let base: Vec<String> = match kw {
                    "crate::" => Vec::new(),
                    // The parent: of `a::b` (a/b.rs) and of `a::b` (a/b/mod.rs) alike.
                    "super::" => here[..here.len().saturating_sub(1)].to_vec(),
                    _ => here.clone(),
                };
                for path in use_tree(&code[from..]) {
                    let mut full = base.clone();
                    let mut rest = path.as_slice();
                    while rest.first().is_some_and(|p| p == "super") {
                        full.pop();
                        rest = &rest[1..];
                    }
                    full.extend(rest.iter().cloned());
                    let target = (1..=full.len())
                        .rev()
                        .map(|k| full[..k].join("::"))
                        .find(|cand| mods.contains_key(cand))
                        .or_else(|| (kw != "crate::").then(|| base.join("::")));
                    if let Some(target) = target.filter(|t| t != name && mods.contains_key(t)) {
                        arrows.entry(name.clone()).or_default().insert(target);
                    }
                }
            }
        }
    }
    arrows
}

/// Groups of modules that reach each other (Tarjan's algorithm).
fn circles(arrows: &BTreeMap<String, BTreeSet<String>>, nodes: &[String]) -> Vec<Vec<String>> {
    struct T<'a> {
        arrows: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.arrows.get(v) {
            for w in ws {
                if !t.index.contains_key(w.as_str()) {
                    visit(t, w);
                    let lw = t.low[w.as_str()];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(lw));
                } else if t.on.contains(w.as_str()) {
                    let iw = t.index[w.as_str()];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(iw));
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut group = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                group.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                t.out.push(group);
            }
        }
    }
    let mut t = T {
        arrows,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for n in nodes {
        if !t.index.contains_key(n.as_str()) {
            visit(&mut t, n);
        }
    }
    t.out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_two_modules_import_each_other_around_a_circle() {
    let mods = modules(&src());
    let arrows = arrows(&mods);
    let nodes: Vec<String> = mods.keys().cloned().collect();
    let found = circles(&arrows, &nodes);
    let described: Vec<String> = found
        .iter()
        .map(|group| {
            let inner: Vec<String> = group
                .iter()
                .map(|m| {
                    let to: Vec<&str> = arrows[m]
                        .iter()
                        .filter(|t| group.contains(t))
                        .map(String::as_str)
                        .collect();
                    format!("{m} -> {}", to.join(", "))
                })
                .collect();
            inner.join("; ")
        })
        .collect();
    assert!(found.is_empty(), "modules in a circle:\n{}", described.join("\n"));
}

#[test]
fn imports_only_point_down_the_layers() {
    let mods = modules(&src());
    let arrows = arrows(&mods);
    let mut wrong = Vec::new();
    for name in mods.keys().filter(|n| !n.is_empty() && *n != "main") {
        let top = name.split("::").next().unwrap();
        let Some(own) = layer_of(top) else {
            wrong.push(format!("{name}: its top-level module `{top}` has no layer in LAYERS"));
            continue;
        };
        for target in arrows.get(name).into_iter().flatten() {
            let to = target.split("::").next().unwrap();
            if let Some(theirs) = layer_of(to).filter(|t| *t > own) {
                wrong.push(format!(
                    "{name} (layer {own}) uses {target} (layer {theirs}), which is above it"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_reader_finds_paths_in_use_trees() {
    let paths = use_tree("a::b::{c, d::{e, f}, self}; x");
    let flat: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(flat, ["a::b::c", "a::b::d::e", "a::b::d::f", "a::b::self"]);
    assert_eq!(code_of("a // crate::x\nb /* crate::y */ c"), "a \nb  c");
}
