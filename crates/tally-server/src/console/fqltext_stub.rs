//! TEMPORARY stand-in for tally-fqltext until branch `shell` lands: JSON in, JSON out.
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}
pub fn parse(src: &str) -> Result<serde_json::Value, ParseError> {
    serde_json::from_str(src).map_err(|e| ParseError { line: e.line(), column: e.column(), message: e.to_string() })
}
pub fn format(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}
