//! The shell's import graph (`netlat/src`): which module's non-test code names which other
//! module through `crate::…`. A test keeps it free of cycles, so the rooms stay layered:
//! `cmd` above `output`/`export`/`kernel`/`node`, and nothing below reaching back up.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

/// Modules (`kernel/loader`, `output`, …) and the modules each one imports.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The kube-proxy rule decoders share helpers by design: one unit in the graph.
fn unit(module: &str) -> String {
    match module {
        "node/nft" | "node/services" | "node/xt" => "node/rules".into(),
        m => m.into(),
    }
}

fn module_name(rel: &Path) -> String {
    let s = rel.with_extension("").to_string_lossy().replace('\\', "/");
    s.strip_suffix("/mod").map_or(s.clone(), str::to_string)
}

/// Every `crate::a::b…` path in `code`, as module-path candidates `a`, `a/b`, …, including the
/// items of `use crate::{a::x, b::{y, z}}` groups.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find("};").unwrap_or(group.len());
            for item in group[..end].split([',', '\n']) {
                let path: Vec<String> = item
                    .trim()
                    .split("::")
                    .map(|p| p.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_'))
                    .take_while(|p| {
                        !p.is_empty() && p.starts_with(|c: char| c.is_ascii_lowercase())
                    })
                    .map(str::to_string)
                    .collect();
                if !path.is_empty() {
                    out.push(path);
                }
            }
        } else {
            let path: Vec<String> = rest
                .split("::")
                .map_while(|p| {
                    let name: String = p
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    (!name.is_empty() && name.starts_with(|c: char| c.is_ascii_lowercase()))
                        .then_some(name)
                })
                .collect();
            out.push(path);
        }
    }
    out
}

/// The graph of the crate rooted at `src`, tests left out.
pub fn graph(src: &Path) -> std::io::Result<Graph> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let modules: BTreeMap<String, _> = files
        .iter()
        .filter_map(|f| Some((module_name(f.strip_prefix(src).ok()?), f)))
        .collect();
    let mut g = Graph::new();
    for (m, f) in &modules {
        let text = fs::read_to_string(f)?;
        let code = text
            .find("#[cfg(test)]\nmod tests")
            .map_or(text.as_str(), |i| &text[..i]);
        let from = unit(m);
        for path in crate_paths(code) {
            let Some(target) = (1..=path.len())
                .rev()
                .map(|k| path[..k].join("/"))
                .find(|c| modules.contains_key(c))
            else {
                continue;
            };
            let to = unit(&target);
            // A parent naming its own child is containment, not an import.
            if to != from && !to.starts_with(&format!("{from}/")) {
                g.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    Ok(g)
}

/// The strongly connected components with more than one module (Tarjan).
pub fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        for w in s.g.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let lw = s.low[w.as_str()];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.stack.contains(&w.as_str()) {
                let iw = s.index[w.as_str()];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = g
        .iter()
        .flat_map(|(k, v)| std::iter::once(k.as_str()).chain(v.iter().map(String::as_str)))
        .collect();
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_planted_cycle() {
        let mut g = Graph::new();
        g.entry("a".into()).or_default().insert("b".into());
        g.entry("b".into()).or_default().insert("c".into());
        g.entry("c".into()).or_default().insert("a".into());
        g.entry("c".into()).or_default().insert("d".into());
        assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
        assert_eq!(
            crate_paths("use crate::{\n    export::{Exports, X},\n    node::live_facts::Y,\n};"),
            vec![
                vec!["export".to_string()],
                vec!["node".into(), "live_facts".into()]
            ]
        );
    }

    /// The shell's modules import each other without a cycle.
    #[test]
    fn the_shell_has_no_import_cycle() {
        let src = crate::workspace_root().join("netlat/src");
        let g = graph(&src).expect("read netlat/src");
        assert!(g.contains_key("cmd/watch"), "{g:?}");
        assert!(
            g["cmd/watch"].contains("kernel/ring"),
            "{:?}",
            g["cmd/watch"]
        );
        assert_eq!(cycles(&g), Vec::<Vec<String>>::new(), "{g:#?}");
    }
}
