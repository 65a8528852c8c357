//! The layout of `server/src` stays as docs/ARCHITECTURE.md draws it: three parts whose arrows
//! go one way (`cli/` may use `runtime/` and `state/`, `runtime/` may use `state/`, `state/`
//! uses neither, `hardening.rs` uses nothing of the crate), no circle between files, and no
//! function that returns its error as a bare `String`.
//!
//! An arrow is any path that names another file's module: a `use` line, an inline path such as
//! `crate::state::StateDir::new` or `super::files::sync_dir`, a `pub use` re-export. A `mod x;`
//! declaration is containment, not an arrow: a child file that adds methods to its parent's type
//! (`use super::Daemon`) points at its parent, and the parent must then not name the child.
//! Test code (`#[cfg(test)]` items and modules) is left out: tests may reach anywhere.
//!
//! The check reads the source text itself (comments and string literals blanked out), so it
//! needs no compiler internals; what it cannot follow (an inline `mod x { ... }` outside tests)
//! it refuses, rather than pass by not looking.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Blanks comments, string and character literals (keeping line breaks), so paths inside them
/// are not read as code.
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"' | '#')) && raw_string_prefix(&b, i) {
            // Raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push_str(&" ".repeat(j + 1 - i));
            i = j + 1;
            while i < b.len() {
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    out.push_str(&" ".repeat(1 + hashes));
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(b[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() {
                if b[i] == '\\' {
                    out.push(' ');
                    out.push(blank(*b.get(i + 1).unwrap_or(&' ')));
                    i += 2;
                } else if b[i] == '"' {
                    out.push(' ');
                    i += 1;
                    break;
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime ('a), which is kept.
            let close = if next == Some('\\') {
                (i + 2..b.len().min(i + 12)).find(|&j| b[j] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    out.push_str(&" ".repeat(end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// Whether the `r` at `i` starts a raw string: `r"`, `r#"`, or `br"` (not the end of a name).
fn raw_string_prefix(b: &[char], i: usize) -> bool {
    !prev_is_ident(b, i) || (b[i - 1] == 'b' && !prev_is_ident(b, i - 1))
}

/// Blanks every `#[cfg(test)]` item (a test module's block, a test-only function), and returns
/// the names of test modules declared as files (`#[cfg(test)] mod tests;`).
fn drop_test_code(code: &str) -> (String, Vec<String>) {
    let mut out: Vec<char> = code.chars().collect();
    let mut test_files = Vec::new();
    let text: String = out.iter().collect();
    let mut search = 0;
    while let Some(at) = text[search..].find("#[cfg(test)]").map(|p| p + search) {
        let chars_at = text[..at].chars().count();
        search = at + 1;
        // The item after the attribute (and any further attributes).
        let mut j = chars_at + "#[cfg(test)]".len();
        loop {
            while j < out.len() && out[j].is_whitespace() {
                j += 1;
            }
            if out.get(j) == Some(&'#') {
                while j < out.len() && out[j] != ']' {
                    j += 1;
                }
                j += 1;
            } else {
                break;
            }
        }
        let rest: String = out[j..out.len().min(j + 80)].iter().collect();
        let words: Vec<&str> =
            rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect();
        let mod_name = match words.as_slice() {
            ["mod", name, ..] => Some(name.to_string()),
            ["pub", "mod", name, ..] => Some(name.to_string()),
            ["pub", "crate", "mod", name, ..] => Some(name.to_string()),
            _ => None,
        };
        // The item ends at a `;` before any brace, or at the brace matching its first `{`.
        let mut k = j;
        let mut depth = 0usize;
        let mut end = out.len();
        while k < out.len() {
            match out[k] {
                ';' if depth == 0 => {
                    end = k + 1;
                    if let Some(name) = &mod_name {
                        test_files.push(name.clone());
                    }
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        for c in &mut out[chars_at..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    }
    (out.into_iter().collect(), test_files)
}

/// Tokens of code: identifiers, `::`, and single punctuation characters; each with its line.
fn tokens(code: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut line = 1;
    let b: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push((b[start..i].iter().collect(), line));
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push(("::".into(), line));
            i += 2;
        } else {
            out.push((c.to_string(), line));
            i += 1;
        }
    }
    out
}

fn is_ident(t: &str) -> bool {
    t.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// One path named in a file: its segments, where it binds a local name (in a `use`), and its line.
#[derive(Debug, Clone)]
struct Named {
    segs: Vec<String>,
    binds: Option<String>,
    line: usize,
}

/// Expands a `use` tree starting at `toks[*i]` under `prefix`, until `;` (or the closing brace).
fn use_tree(toks: &[(String, usize)], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Named>) {
    let mut segs = prefix.clone();
    while *i < toks.len() {
        let (t, line) = (&toks[*i].0, toks[*i].1);
        match t.as_str() {
            "::" => *i += 1,
            "{" => {
                *i += 1;
                loop {
                    use_tree(toks, i, segs.clone(), out);
                    match toks.get(*i).map(|t| t.0.as_str()) {
                        Some(",") => *i += 1,
                        Some("}") => {
                            *i += 1;
                            break;
                        }
                        _ => break,
                    }
                    if toks.get(*i).map(|t| t.0.as_str()) == Some("}") {
                        *i += 1;
                        break;
                    }
                }
                return;
            }
            "*" => {
                *i += 1;
                out.push(Named { segs: segs.clone(), binds: None, line });
                return;
            }
            "self" if segs.len() > prefix.len() || !prefix.is_empty() => {
                // `{self, ...}` names the prefix itself.
                *i += 1;
                let bind = segs.last().cloned();
                let bind = take_alias(toks, i).or(bind);
                out.push(Named { segs: segs.clone(), binds: bind, line });
                return;
            }
            "," | "}" | ";" => {
                if segs.len() > prefix.len() {
                    out.push(Named { segs: segs.clone(), binds: segs.last().cloned(), line });
                }
                return;
            }
            "as" => {
                let alias = take_alias(toks, i);
                out.push(Named { segs: segs.clone(), binds: alias, line });
                return;
            }
            _ if is_ident(t) => {
                segs.push(t.clone());
                *i += 1;
            }
            _ => return,
        }
    }
}

fn take_alias(toks: &[(String, usize)], i: &mut usize) -> Option<String> {
    if toks.get(*i).map(|t| t.0.as_str()) == Some("as") {
        *i += 2;
        return toks.get(*i - 1).map(|t| t.0.clone()).filter(|a| a != "_");
    }
    None
}

/// Every path a file names: the leaves of its `use` trees (with the names they bind), then the
/// inline paths of two or more segments elsewhere.
fn named_paths(code: &str) -> Vec<Named> {
    let toks = tokens(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].0.as_str();
        if t == "use" && (i == 0 || !matches!(toks[i - 1].0.as_str(), "::" | ".")) {
            i += 1;
            use_tree(&toks, &mut i, Vec::new(), &mut out);
            while i < toks.len() && toks[i].0 != ";" {
                i += 1;
            }
            continue;
        }
        let after_sep = i > 0 && matches!(toks[i - 1].0.as_str(), "::" | ".");
        if is_ident(t) && !after_sep && toks.get(i + 1).map(|t| t.0.as_str()) == Some("::") {
            let line = toks[i].1;
            let mut segs = vec![t.to_string()];
            let mut j = i + 1;
            while toks.get(j).map(|t| t.0.as_str()) == Some("::") && toks.get(j + 1).is_some_and(|t| is_ident(&t.0)) {
                segs.push(toks[j + 1].0.clone());
                j += 2;
            }
            if segs.len() > 1 {
                out.push(Named { segs, binds: None, line });
            }
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// One source file of the crate.
#[derive(Debug)]
struct File {
    /// Relative to `src/`.
    rel: String,
    /// Its module path (`[]` for lib.rs).
    module: Vec<String>,
    /// Child modules declared with `mod x;` (test modules left out).
    children: Vec<String>,
    named: Vec<Named>,
}

fn child_path(src: &Path, rel: &str, name: &str) -> Option<String> {
    let file = Path::new(rel);
    let stem = file.file_stem().unwrap().to_string_lossy();
    let dir = file.parent().unwrap_or(Path::new(""));
    let base = if matches!(stem.as_ref(), "mod" | "lib" | "main") { dir.to_path_buf() } else { dir.join(&*stem) };
    [base.join(format!("{name}.rs")), base.join(name).join("mod.rs")]
        .into_iter()
        .find(|p| src.join(p).is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

/// Reads the crate from `src/lib.rs` down, and `src/main.rs` beside it.
fn read_crate(src: &Path) -> Result<Vec<File>, String> {
    let mut files = Vec::new();
    let mut todo = vec![("lib.rs".to_string(), Vec::<String>::new())];
    if src.join("main.rs").is_file() {
        todo.push(("main.rs".to_string(), vec!["<bin>".to_string()]));
    }
    while let Some((rel, module)) = todo.pop() {
        let text = std::fs::read_to_string(src.join(&rel)).map_err(|e| format!("{rel}: {e}"))?;
        let (code, test_mods) = drop_test_code(&strip(&text));
        let toks = tokens(&code);
        let mut children = Vec::new();
        for (k, (t, line)) in toks.iter().enumerate() {
            if t != "mod" || toks.get(k + 1).is_none_or(|n| !is_ident(&n.0)) {
                continue;
            }
            let name = toks[k + 1].0.clone();
            match toks.get(k + 2).map(|t| t.0.as_str()) {
                Some(";") if !test_mods.contains(&name) => {
                    let path =
                        child_path(src, &rel, &name).ok_or(format!("{rel}:{line}: no file for `mod {name};`"))?;
                    let mut m = module.clone();
                    m.push(name.clone());
                    todo.push((path, m));
                    children.push(name);
                }
                Some(";") => {}
                _ => {
                    return Err(format!(
                        "{rel}:{line}: inline `mod {name} {{ ... }}` outside test code: this check does not follow \
                         inline modules; give it its own file"
                    ))
                }
            }
        }
        files.push(File { rel, module, children, named: named_paths(&code) });
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(files)
}

/// One arrow: from a file to another, with the line that draws it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Arrow {
    from: String,
    line: usize,
    to: String,
}

/// Resolves every named path to the file of the deepest module it reaches.
fn arrows(files: &[File]) -> Vec<Arrow> {
    let by_module: BTreeMap<&[String], &File> = files.iter().map(|f| (f.module.as_slice(), f)).collect();
    let mut out = BTreeSet::new();
    for f in files {
        let in_bin = f.module.first().is_some_and(|m| m == "<bin>");
        // Absolute module path of a path's start, or None for another crate.
        let start = |segs: &[String], aliases: &BTreeMap<String, Vec<String>>| -> Option<Vec<String>> {
            let (first, rest) = segs.split_first()?;
            let mut at = match first.as_str() {
                "crate" if !in_bin => Vec::new(),
                "knockd" if in_bin => Vec::new(),
                "self" => f.module.clone(),
                "super" => f.module[..f.module.len().saturating_sub(1)].to_vec(),
                name if f.children.iter().any(|c| c == name) => {
                    let mut m = f.module.clone();
                    m.push(name.to_string());
                    m
                }
                name => aliases.get(name)?.clone(),
            };
            let mut rest = rest.iter().peekable();
            while rest.peek().is_some_and(|s| s.as_str() == "super") {
                at.pop();
                rest.next();
            }
            at.extend(rest.cloned());
            Some(at)
        };
        // The names `use` lines bind (wherever they are in the file), then every path.
        let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for _ in 0..2 {
            for n in f.named.iter().filter(|n| n.binds.is_some()) {
                if let Some(abs) = start(&n.segs, &aliases) {
                    aliases.insert(n.binds.clone().unwrap_or_default(), abs);
                }
            }
        }
        let resolved: Vec<(Vec<String>, usize)> =
            f.named.iter().filter_map(|n| Some((start(&n.segs, &aliases)?, n.line))).collect();
        for (abs, line) in resolved {
            let mut deepest = None;
            for k in 0..=abs.len() {
                if let Some(target) = by_module.get(&abs[..k]) {
                    deepest = Some(*target);
                }
            }
            if let Some(target) = deepest.filter(|t| t.rel != f.rel && !t.module.is_empty()) {
                out.insert(Arrow { from: f.rel.clone(), line, to: target.rel.clone() });
            }
        }
    }
    out.into_iter().collect()
}

/// Which part a file belongs to.
fn part(rel: &str) -> &'static str {
    match rel.split('/').next().unwrap_or("") {
        "cli" => "cli",
        "state" => "state",
        "runtime" => "runtime",
        "hardening.rs" => "leaf",
        _ => "top",
    }
}

/// The arrows that go the wrong way between parts.
fn wrong_way(arrows: &[Arrow]) -> Vec<String> {
    arrows
        .iter()
        .filter(|a| {
            matches!((part(&a.from), part(&a.to)), ("runtime", "cli") | ("state", "runtime" | "cli") | ("leaf", _))
        })
        .map(|a| format!("{}:{} uses {} ({} -> {}, which must not)", a.from, a.line, a.to, part(&a.from), part(&a.to)))
        .collect()
}

/// The circles: each strongly connected set of files with more than one file, with its arrows.
fn circles(arrows: &[Arrow]) -> Vec<String> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for a in arrows {
        graph.entry(&a.from).or_default().insert(&a.to);
        graph.entry(&a.to).or_default();
    }
    // Reachability by depth-first search from each node (the graph is small).
    let reach = |from: &str| -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(n) = todo.pop() {
            for &m in &graph[n] {
                if seen.insert(m) {
                    todo.push(m);
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&str, BTreeSet<&str>> = graph.keys().map(|&n| (n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for &n in graph.keys() {
        if done.contains(n) || !reaches[n].contains(n) {
            continue;
        }
        let set: BTreeSet<&str> = reaches[n].iter().copied().filter(|m| reaches[m].contains(n)).collect();
        done.extend(set.iter().copied());
        let inside: Vec<String> = arrows
            .iter()
            .filter(|a| set.contains(a.from.as_str()) && set.contains(a.to.as_str()))
            .map(|a| format!("  {}:{} -> {}", a.from, a.line, a.to))
            .collect();
        out.push(format!(
            "circle through {}:\n{}",
            set.iter().copied().collect::<Vec<_>>().join(", "),
            inside.join("\n")
        ));
    }
    out
}

fn server_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn imports_go_one_way_without_circles() {
    let files = read_crate(&server_src()).unwrap_or_else(|e| panic!("{e}"));
    assert!(files.len() > 30, "read only {} files: is the module tree followed?", files.len());
    let arrows = arrows(&files);
    // The check must see the arrows it is about, or it proves nothing.
    assert!(
        arrows.iter().any(|a| part(&a.from) == "cli" && part(&a.to) == "runtime")
            && arrows.iter().any(|a| part(&a.from) == "runtime" && part(&a.to) == "state"),
        "the check found no arrow from cli/ to runtime/ or from runtime/ to state/: {arrows:#?}"
    );
    let mut problems = wrong_way(&arrows);
    problems.extend(circles(&arrows));
    assert!(
        problems.is_empty(),
        "server/src breaks its layout (docs/ARCHITECTURE.md, \"The parts\"):\n{}",
        problems.join("\n")
    );
}

/// Every `Result<T, String>` in the code, as `file:line`.
fn string_errors(src: &Path, files: &[File]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(src.join(&f.rel)).unwrap();
        let (code, _) = drop_test_code(&strip(&text));
        let toks = tokens(&code);
        for (k, (t, line)) in toks.iter().enumerate() {
            if t != "Result" || toks.get(k + 1).map(|t| t.0.as_str()) != Some("<") {
                continue;
            }
            // The arguments at depth 1 (angle brackets; not inside parentheses or brackets).
            let (mut depth, mut nest, mut args, mut current) = (0, 0, Vec::new(), String::new());
            for (n, (t, _)) in toks[k + 1..].iter().enumerate() {
                let arrow = n > 0 && toks[k + n].0 == "-";
                match t.as_str() {
                    "(" | "[" => nest += 1,
                    ")" | "]" => nest -= 1,
                    "<" => {
                        depth += 1;
                        if depth == 1 {
                            continue;
                        }
                    }
                    ">" if !arrow => {
                        depth -= 1;
                        if depth == 0 {
                            args.push(std::mem::take(&mut current));
                            break;
                        }
                    }
                    "," if depth == 1 && nest == 0 => {
                        args.push(std::mem::take(&mut current));
                        continue;
                    }
                    _ => {}
                }
                current.push_str(t);
            }
            if args.get(1).is_some_and(|e| e == "String" || e == "std::string::String") {
                out.push(format!("{}:{line}", f.rel));
            }
        }
    }
    out
}

#[test]
fn no_error_is_a_bare_string() {
    let src = server_src();
    let files = read_crate(&src).unwrap_or_else(|e| panic!("{e}"));
    let found = string_errors(&src, &files);
    assert!(
        found.is_empty(),
        "Result<_, String> loses what failed and its exit status; use the part's error type \
         (state::StateError, runtime's DoorError, cli's CliError, ...):\n{}",
        found.join("\n")
    );
}

/// The check itself, on a small crate made for it: it must see a circle, an arrow the wrong
/// way, an inline path, a `String` error, and ignore comments, strings and test code.
#[test]
fn the_check_sees_what_it_is_about() {
    let dir = std::env::temp_dir().join(format!("knockd-layout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("lib.rs", "pub mod cli;\npub mod runtime;\npub mod state;\n");
    write("cli/mod.rs", "pub mod admin;\npub mod other;\n");
    write("cli/other.rs", "pub fn x() {}\n");
    write("cli/admin.rs", "use crate::runtime::doors::Doors;\n");
    write("runtime/mod.rs", "pub mod doors;\npub mod daemon;\n");
    write(
        "runtime/doors.rs",
        "// crate::cli::admin in a comment\nconst S: &str = \"crate::cli::admin\";\n\
         pub fn f() -> Result<(), String> { super::daemon::run() }\n\
         #[cfg(test)]\nmod tests { use crate::cli::admin; }\n",
    );
    write("runtime/daemon.rs", "use crate::state::{self, Ledger};\npub fn g() { crate::runtime::doors::f(); }\n");
    write("state/mod.rs", "pub mod ledger;\npub use ledger::Ledger;\n");
    write("state/ledger.rs", "pub fn h() -> Result<u8, std::io::Error> { crate::cli::other::x() }\n");
    let files = read_crate(&dir).unwrap();
    let arrows = arrows(&files);
    let wrong = wrong_way(&arrows);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(wrong[0].starts_with("state/ledger.rs:1 uses cli/other.rs"), "{wrong:?}");
    let circles = circles(&arrows);
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(circles[0].starts_with("circle through runtime/daemon.rs, runtime/doors.rs"), "{circles:?}");
    assert!(!arrows.iter().any(|a| a.from == "runtime/doors.rs" && a.to.starts_with("cli")), "{arrows:?}");
    assert_eq!(string_errors(&dir, &files), vec!["runtime/doors.rs:3".to_string()]);
    write("cli/mod.rs", "pub mod admin { }\npub mod other;\n");
    assert!(read_crate(&dir).unwrap_err().contains("inline `mod admin"));
    let _ = std::fs::remove_dir_all(&dir);
}
