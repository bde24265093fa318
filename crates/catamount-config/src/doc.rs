//! The options table of docs/configuration.md, made from [`DEFINITIONS`]: a test
//! (`tests/options_doc.rs`) fails when the file's table differs from it, and
//! `cargo run -p catamount-config --example options-doc` rewrites the file's table.

use crate::options::{Flag, DEFINITIONS};

/// The lines around the generated table in docs/configuration.md.
pub const BEGIN: &str = "<!-- BEGIN options table: generated from crates/catamount-config/src/options/mod.rs by `cargo run -p catamount-config --example options-doc`; edit the definitions, not this table -->";
pub const END: &str = "<!-- END options table -->";

/// One row per definition: its DSL methods and flags, doc, default and example.
pub fn options_table() -> String {
    let mut out =
        String::from("| Method (flag) | What it does | Default | Example |\n|---|---|---|---|\n");
    for d in DEFINITIONS {
        let names: Vec<String> = d
            .methods
            .iter()
            .filter(|m| m.dsl)
            .map(|m| format!("`{}`", m.name))
            .collect();
        let flags: Vec<String> = d.flags.iter().map(flag_usage).collect();
        let method = match (names.is_empty(), flags.is_empty()) {
            (true, true) => "(environment only)".to_string(),
            (true, false) => flags.join(", "),
            (false, true) => names.join(", "),
            (false, false) => format!("{} ({})", names.join(", "), flags.join(", ")),
        };
        let example = if d.example.is_empty() {
            String::new()
        } else {
            format!("`{}`", d.example)
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            cell(&method),
            cell(d.doc),
            cell(d.default),
            cell(&example)
        ));
    }
    out
}

fn flag_usage(flag: &Flag) -> String {
    format!("`{}`", flag.display())
}

/// A table cell: a `|` would end it.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// `doc` with the text between [`BEGIN`] and [`END`] replaced by the current table; None when
/// the markers are missing.
pub fn with_current_table(doc: &str) -> Option<String> {
    let start = doc.find(BEGIN)? + BEGIN.len();
    let end = start + doc[start..].find(END)?;
    Some(format!(
        "{}\n{}{}",
        &doc[..start],
        options_table(),
        &doc[end..]
    ))
}
