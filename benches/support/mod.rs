//! Shared by the benchmarks: writing their section of BENCHMARKS.md.

/// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in
/// BENCHMARKS.md with `body` (adding a section titled `title` the first time).
pub fn write_section(name: &str, title: &str, body: &str) {
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let section = format!("{begin}\n{body}{end}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let updated = match (text.find(&begin), text.find(&end)) {
        (Some(a), Some(b)) => format!("{}{}{}", &text[..a], section, &text[b + end.len()..]),
        _ => format!("{text}\n## {title}\n\n{section}\n"),
    };
    std::fs::write(&path, updated).unwrap();
}
