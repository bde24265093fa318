//! docs/configuration.md's options table is the one the definitions make.

#[test]
fn the_docs_table_matches_the_definitions() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let current = catamount_config::doc::with_current_table(&text)
        .unwrap_or_else(|| panic!("{path} lacks the generated table's marker lines"));
    assert!(
        current == text,
        "docs/configuration.md's options table differs from the option definitions; run \
         `cargo run -p catamount-config --example options-doc` and review the diff"
    );
}
