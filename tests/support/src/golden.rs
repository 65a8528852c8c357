//! Golden files: what a command prints, pinned in `tests/golden/` of the repository. A test
//! compares the output with the file; `BLESS=1` rewrites the file instead, after an intended
//! change (then review `git diff tests/golden`). Output that varies (directories, ids,
//! fingerprints) is replaced with placeholders like `$DIR` before it is compared.

use std::fs;
use std::path::PathBuf;

/// The golden file `name`.
pub fn path(name: &str) -> PathBuf {
    crate::repo().join("tests/golden").join(name)
}

/// Compares `actual` with golden file `name` (or, with `BLESS` set, writes it there).
pub fn check(name: &str, actual: &str) {
    let path = path(name);
    if std::env::var_os("BLESS").is_some() {
        fs::write(&path, actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let expected =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create it)", path.display()));
    if actual != expected {
        panic!(
            "output differs from {} (BLESS=1 rewrites it), first at {}\n--- expected\n{expected}--- actual\n{actual}",
            path.display(),
            first_difference(&expected, actual)
        );
    }
}

/// Where two texts first differ, as `line N: -EXPECTED +ACTUAL`.
fn first_difference(expected: &str, actual: &str) -> String {
    let (mut want, mut got) = (expected.split_inclusive('\n'), actual.split_inclusive('\n'));
    for line in 1.. {
        match (want.next(), got.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (None, None) => break,
            (a, b) => return format!("line {line}: -{:?} +{:?}", a.unwrap_or(""), b.unwrap_or("")),
        }
    }
    "no line (the texts are equal)".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_is_named_by_line() {
        assert_eq!(first_difference("a\nb\nc\n", "a\nB\nc\n"), "line 2: -\"b\\n\" +\"B\\n\"");
        assert_eq!(first_difference("a\n", "a\nmore\n"), "line 2: -\"\" +\"more\\n\"");
        assert_eq!(first_difference("a\n", "a"), "line 1: -\"a\\n\" +\"a\"");
    }

    #[test]
    fn a_golden_file_that_differs_fails_the_test() {
        let name = "knock-help.txt";
        let text = fs::read_to_string(path(name)).expect("the golden file of knock --help");
        if std::env::var_os("BLESS").is_none() {
            check(name, &text);
            assert!(std::panic::catch_unwind(|| check(name, &format!("{text}extra\n"))).is_err());
        }
    }
}
