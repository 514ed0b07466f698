//! `tieralloc-view`: turns a trace into an SVG timeline of residency over time.
//!
//! ```text
//! TIERALLOC_TRACE=trace.csv cargo run --release --example tour
//! cargo run --release --example tieralloc-view -- trace.csv timeline.svg
//! ```
//!
//! Time runs to the right and addresses downwards; each band is coloured by where its memory
//! lived at each moment (host blue, each device its own colour, white before it was first
//! placed or after it was freed).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: tieralloc-view <trace.csv> <timeline.svg>");
        return ExitCode::from(2);
    };
    let csv = match std::fs::read_to_string(input) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tieralloc-view: cannot read {input}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let svg = match tieralloc::trace::timeline_svg(&csv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tieralloc-view: {input}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::write(output, svg) {
        eprintln!("tieralloc-view: cannot write {output}: {e}");
        return ExitCode::FAILURE;
    }
    let events = csv
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .count();
    println!("{output}: timeline of {events} events");
    ExitCode::SUCCESS
}
