//! Rewrites the options table of docs/configuration.md from the option definitions
//! (`cargo run -p catamount-config --example options-doc`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("options-doc: cannot read {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(updated) = catamount_config::doc::with_current_table(&text) else {
        eprintln!(
            "options-doc: {path} lacks the lines {:?} and {:?}",
            catamount_config::doc::BEGIN,
            catamount_config::doc::END
        );
        return ExitCode::FAILURE;
    };
    if let Err(e) = std::fs::write(path, updated) {
        eprintln!("options-doc: cannot write {path}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
