//! The table design promises that every read is a Query or a key lookup: a Scan reads the
//! whole table, so its cost grows with every connection. This keeps it that way.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn no_dynamodb_scan_in_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("shared/src/store/dynamodb/mod.rs")),
        "the walk did not reach the DynamoDB store"
    );
    let offenders: Vec<String> = files
        .iter()
        // This file names what it looks for.
        .filter(|f| !f.ends_with("tests/tests/no_scan.rs"))
        // The benchmark harness is not the product: its soak Scans DynamoDB Local once, after
        // a run, to prove the table empty (bench/src/soak/rows.rs).
        .filter(|f| !f.strip_prefix(&root).is_ok_and(|p| p.starts_with("bench")))
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            text.contains(".scan()") || text.contains("ScanInput") || text.contains("scan::Scan")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "DynamoDB Scan used in: {offenders:?}");
}
