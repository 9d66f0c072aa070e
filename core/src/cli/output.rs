//! What the CLI prints: aligned tables for people (coloured on a terminal), JSON for scripts,
//! errors on stderr.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use comfy_table::{Cell, Color, ContentArrangement, Table, presets};
use serde::Serialize;

use super::Failure;

/// Where and how the CLI writes.
pub(super) struct Output {
    json: bool,
    colour: bool,
}

impl Output {
    pub(super) fn new(json: bool) -> Self {
        let colour = !json
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
        Self { json, colour }
    }

    /// Whether the output is JSON.
    pub(super) fn json(&self) -> bool {
        self.json
    }

    /// Whether people are watching (progress bars, questions).
    pub(super) fn interactive(&self) -> bool {
        !self.json && std::io::stderr().is_terminal() && std::io::stdin().is_terminal()
    }

    /// Prints `value` as one line of JSON.
    pub(super) fn print_json(&self, value: &impl Serialize) {
        match serde_json::to_string(value) {
            Ok(line) => self.line(&line),
            Err(error) => eprintln!("error: cannot encode the output as JSON: {error}"),
        }
    }

    /// Prints a line to stdout (a closed pipe is not an error worth a panic).
    pub(super) fn line(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{text}");
    }

    /// Prints a table of `rows` under `headers`.
    pub(super) fn table(&self, headers: &[&str], rows: Vec<Vec<Cell>>) {
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(headers.iter().map(|header| self.header(header)));
        for row in rows {
            table.add_row(row);
        }
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
        }
        if self.colour {
            table.enforce_styling();
        } else {
            table.force_no_tty();
        }
        for line in table.lines() {
            self.line(line.trim_end());
        }
    }

    fn header(&self, text: &str) -> Cell {
        let cell = Cell::new(text);
        if self.colour {
            cell.add_attribute(comfy_table::Attribute::Bold)
        } else {
            cell
        }
    }

    /// A cell coloured `colour` on a terminal.
    pub(super) fn coloured(&self, text: impl ToString, colour: Color) -> Cell {
        let cell = Cell::new(text);
        if self.colour { cell.fg(colour) } else { cell }
    }

    /// Reports `failure` on stderr (and, with `--json`, as JSON on stdout) and answers its code.
    pub(super) fn fail(&self, failure: Failure) -> ExitCode {
        if self.json {
            #[derive(Serialize)]
            struct Error<'a> {
                error: &'a str,
                code: u8,
            }
            self.print_json(&Error {
                error: failure.message(),
                code: failure.code(),
            });
        }
        eprintln!("error: {}", failure.message());
        ExitCode::from(failure.code())
    }
}

/// `seconds` as people read it: `42 ms`, `3.2 s`, `4 min`, `2.5 h`, `3 d`.
pub(super) fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        s if s < 60.0 => format!("{s:.1} s"),
        s if s < 3600.0 => format!("{:.0} min", s / 60.0),
        s if s < 86_400.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} d", s / 86_400.0),
    }
}

/// `bytes` in MiB, or `-` when unknown.
pub(super) fn mebibytes(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "-".to_owned(),
        |bytes| format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(duration(0.042), "42 ms");
        assert_eq!(duration(3.21), "3.2 s");
        assert_eq!(duration(240.0), "4 min");
        assert_eq!(duration(9000.0), "2.5 h");
        assert_eq!(duration(3.0 * 86_400.0), "3.0 d");
        assert_eq!(mebibytes(Some(3 * 1_048_576)), "3.0 MiB");
        assert_eq!(mebibytes(None), "-");
    }
}
