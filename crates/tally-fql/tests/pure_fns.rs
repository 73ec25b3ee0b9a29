//! Data-driven tests of the pure FQL functions (logic, math, string, time, types):
//! each row is a query in wire JSON and either the expected result (wire JSON) or the
//! expected error code and position. Expected values follow FQL v4 (most come from the
//! official drivers' own test suites).

use serde_json::Value as Json;
use tally_storage::Store as _;

enum X {
    /// The result, as wire JSON.
    V(&'static str),
    /// An error: code and position (as a JSON array).
    E(&'static str, &'static str),
}
use X::{E, V};

const IA: &str = "invalid argument";
const IE: &str = "invalid expression";
const NF: &str = "value not found";

/// The transaction time every query runs at: 2023-11-14T22:13:20Z.
const TXN_TS: u64 = 1_700_000_000_000_000;

#[rustfmt::skip]
const CASES: &[(&str, X)] = &[
    // ---- logic ----
    (r#"{"and": [true, true, false]}"#, V("false")),
    (r#"{"and": [true, true, true]}"#, V("true")),
    (r#"{"and": true}"#, V("true")),
    (r#"{"and": false}"#, V("false")),
    (r#"{"and": []}"#, E(IA, r#"["and"]"#)),
    (r#"{"and": [true, 1]}"#, E(IA, r#"["and", 1]"#)),
    // short-circuit: the bad second element is never evaluated
    (r#"{"and": [false, {"add": [1, "x"]}]}"#, V("false")),
    (r#"{"or": [false, false, true]}"#, V("true")),
    (r#"{"or": [false, false, false]}"#, V("false")),
    (r#"{"or": true}"#, V("true")),
    (r#"{"or": false}"#, V("false")),
    (r#"{"or": []}"#, E(IA, r#"["or"]"#)),
    (r#"{"or": [true, {"divide": [1, 0]}]}"#, V("true")),
    (r#"{"or": [false, "x"]}"#, E(IA, r#"["or", 1]"#)),
    (r#"{"not": true}"#, V("false")),
    (r#"{"not": false}"#, V("true")),
    (r#"{"not": 1}"#, E(IA, r#"["not"]"#)),
    (r#"{"equals": [1, 1, 1]}"#, V("true")),
    (r#"{"equals": [1, 1, 2]}"#, V("false")),
    (r#"{"equals": 1}"#, V("true")),
    (r#"{"equals": []}"#, E(IA, r#"["equals"]"#)),
    (r#"{"equals": [{"object": {"a": 10, "b": 20}}, {"object": {"b": 20, "a": 10}}]}"#, V("true")),
    (r#"{"equals": [1, 1.0]}"#, V("false")),
    (r#"{"equals": [{"now": null}, {"time": "now"}]}"#, V("true")),
    (r#"{"equals": [[1, "a"], [1, "a"]]}"#, V("true")),
    (r#"{"lt": [1, 2]}"#, V("true")),
    (r#"{"lt": [1, 2, 3]}"#, V("true")),
    (r#"{"lt": [1, 3, 2]}"#, V("false")),
    (r#"{"lt": [1, 1]}"#, V("false")),
    (r#"{"lt": ["a", "b"]}"#, V("true")),
    (r#"{"lt": [1.5, 2]}"#, V("true")),
    (r#"{"lt": []}"#, E(IA, r#"["lt"]"#)),
    (r#"{"lte": [1, 1]}"#, V("true")),
    (r#"{"lte": [1, 1, 0]}"#, V("false")),
    (r#"{"gt": [2, 1]}"#, V("true")),
    (r#"{"gt": [3, 2, 2]}"#, V("false")),
    (r#"{"gte": [1, 1]}"#, V("true")),
    (r#"{"gte": [3, 2, 2]}"#, V("true")),
    (r#"{"contains_path": ["a", "b"], "in": {"object": {"a": {"object": {"b": 1}}}}}"#, V("true")),
    (r#"{"contains_path": ["c", 0, "d"], "in": {"object": {"a": 1, "c": [{"object": {"d": "e"}}, "f"]}}}"#, V("true")),
    (r#"{"contains_path": "a", "in": {"object": {"a": {"object": {"b": 1}}}}}"#, V("true")),
    (r#"{"contains_path": ["a", "c"], "in": {"object": {"a": {"object": {"b": 1}}}}}"#, V("false")),
    (r#"{"contains_path": ["collection", "id"], "in": {"@ref": {"id": "1", "collection": {"@ref": {"id": "c", "collection": {"@ref": {"id": "collections"}}}}}}}"#, V("true")),
    (r#"{"contains_path": [1.5], "in": {"object": {}}}"#, E(IA, r#"["contains_path", 0]"#)),
    (r#"{"contains": ["a", "b"], "in": {"object": {"a": {"object": {"b": 1}}}}}"#, V("true")),
    (r#"{"contains": "a", "in": {"object": {"a": {"object": {"b": 1}}}}}"#, V("true")),
    (r#"{"contains": ["a", "c"], "in": {"object": {"a": {"object": {"b": 1}}}}}"#, V("false")),
    (r#"{"contains_field": "b", "in": {"object": {"b": 1}}}"#, V("true")),
    (r#"{"contains_field": "b", "in": {"object": {"a": {"object": {"b": 1}}}}}"#, V("false")),
    (r#"{"contains_field": "g", "in": null}"#, V("false")),
    (r#"{"contains_field": ["band"], "in": {"object": {"band": 1}}}"#, E(IA, r#"["contains_field"]"#)),
    (r#"{"contains_field": 10, "in": {"object": {"band": 1}}}"#, E(IA, r#"["contains_field"]"#)),
    (r#"{"contains_value": {"object": {"b": 1}}, "in": {"object": {"a": {"object": {"b": 1}}, "c": ["f"]}}}"#, V("true")),
    (r#"{"contains_value": "f", "in": {"object": {"a": {"object": {"b": 1}}, "c": ["f"]}}}"#, V("false")),
    (r#"{"contains_value": "f", "in": [{"object": {"d": "e"}}, "f"]}"#, V("true")),
    (r#"{"contains_value": null, "in": {"object": {"a": 1}}}"#, V("false")),
    (r#"{"contains_value": [2, 3], "in": [1, [2, 3]]}"#, V("true")),
    (r#"{"contains_value": {"collection": "drums"}, "in": {"@ref": {"id": "1", "collection": {"@ref": {"id": "drums", "collection": {"@ref": {"id": "collections"}}}}}}}"#, V("true")),
    (r#"{"contains_value": "a", "in": "abc"}"#, E(IA, r#"["in"]"#)),
    (r#"{"contains_value": 1, "in": 123}"#, E(IA, r#"["in"]"#)),

    // ---- math ----
    (r#"{"add": [2, 3, 5]}"#, V("10")),
    (r#"{"add": [2, 3.5]}"#, V("5.5")),
    (r#"{"add": 7}"#, V("7")),
    (r#"{"add": []}"#, E(IA, r#"["add"]"#)),
    (r#"{"add": [1, "two"]}"#, E(IA, r#"["add", 1]"#)),
    (r#"{"let": [{"x": [2, 3, 5]}], "in": {"add": {"var": "x"}}}"#, V("10")),
    (r#"{"add": [9223372036854775807, 1]}"#, E(IA, r#"["add"]"#)),
    (r#"{"subtract": [2, 3, 5]}"#, V("-6")),
    (r#"{"subtract": 2}"#, V("2")),
    (r#"{"subtract": []}"#, E(IA, r#"["subtract"]"#)),
    (r#"{"subtract": [-9223372036854775807, 2]}"#, E(IA, r#"["subtract"]"#)),
    (r#"{"multiply": [2, 3, 5]}"#, V("30")),
    (r#"{"multiply": [2, 0.5]}"#, V("1.0")),
    (r#"{"multiply": []}"#, E(IA, r#"["multiply"]"#)),
    (r#"{"multiply": [4611686018427387904, 2]}"#, E(IA, r#"["multiply"]"#)),
    (r#"{"divide": [2.0, 3, 5]}"#, V("0.13333333333333333")),
    (r#"{"divide": 2}"#, V("2")),
    (r#"{"divide": [7, 2]}"#, V("3")),
    (r#"{"divide": [-7, 2]}"#, V("-3")),
    (r#"{"divide": [1, 0]}"#, E(IA, r#"["divide"]"#)),
    (r#"{"divide": [1.0, 0.0]}"#, E(IA, r#"["divide"]"#)),
    (r#"{"divide": []}"#, E(IA, r#"["divide"]"#)),
    (r#"{"modulo": [5, 2]}"#, V("1")),
    (r#"{"modulo": [15, 10, 2]}"#, V("1")),
    (r#"{"modulo": 2}"#, V("2")),
    (r#"{"modulo": [-7, 3]}"#, V("-1")),
    (r#"{"modulo": [5.5, 2]}"#, V("1.5")),
    (r#"{"modulo": [1, 0]}"#, E(IA, r#"["modulo"]"#)),
    (r#"{"modulo": []}"#, E(IA, r#"["modulo"]"#)),
    (r#"{"max": [1, 2, 3]}"#, V("3")),
    (r#"{"max": [-1, -2, -3]}"#, V("-1")),
    (r#"{"max": [2, 3, 5, 4]}"#, V("5")),
    (r#"{"max": [1, 2.5]}"#, V("2.5")),
    (r#"{"max": 2}"#, E(IA, r#"["max"]"#)),
    (r#"{"max": "n"}"#, E(IA, r#"["max"]"#)),
    (r#"{"max": [1, "n"]}"#, E(IA, r#"["max", 1]"#)),
    (r#"{"let": [{"x": [1, 5, 2]}], "in": {"max": {"var": "x"}}}"#, V("5")),
    (r#"{"let": [{"x": 3}], "in": {"max": {"var": "x"}}}"#, E(IA, r#"["in", "max"]"#)),
    (r#"{"let": [{"x": [1, "a"]}], "in": {"min": {"var": "x"}}}"#, E(IA, r#"["in", "min"]"#)),
    (r#"{"min": [1, 2, 3]}"#, V("1")),
    (r#"{"min": [-1, -2, -3]}"#, V("-3")),
    (r#"{"min": 1}"#, E(IA, r#"["min"]"#)),
    (r#"{"min": "n"}"#, E(IA, r#"["min"]"#)),
    (r#"{"abs": -10}"#, V("10")),
    (r#"{"abs": 1}"#, V("1")),
    (r#"{"abs": -2.5}"#, V("2.5")),
    (r#"{"abs": "n"}"#, E(IA, r#"["abs"]"#)),
    (r#"{"abs": -9223372036854775808}"#, E(IA, r#"["abs"]"#)),
    (r#"{"trunc": 45.56789}"#, V("45.56")),
    (r#"{"trunc": 45.56789, "precision": 3}"#, V("45.567")),
    (r#"{"trunc": 155.678, "precision": -1}"#, V("150.0")),
    (r#"{"trunc": 155.678, "precision": 0}"#, V("155.0")),
    (r#"{"trunc": 155.678, "precision": 1}"#, V("155.6")),
    (r#"{"trunc": 155.678, "precision": "x"}"#, E(IA, r#"["precision"]"#)),
    (r#"{"round": 123.456}"#, V("123.46")),
    (r#"{"round": 123.456, "precision": 1}"#, V("123.5")),
    (r#"{"round": 155.678, "precision": -1}"#, V("160.0")),
    (r#"{"round": 155.678, "precision": 0}"#, V("156.0")),
    (r#"{"round": 155.678, "precision": 2}"#, V("155.68")),
    (r#"{"round": 1234, "precision": -2}"#, V("1200")),
    (r#"{"round": 1250, "precision": -2}"#, V("1300")),
    (r#"{"round": 7}"#, V("7")),
    (r#"{"bitor": 1}"#, V("1")),
    (r#"{"bitor": [1, 0, 1, 0]}"#, V("1")),
    (r#"{"bitor": [1, 2, 4]}"#, V("7")),
    (r#"{"bitor": "n"}"#, E(IA, r#"["bitor"]"#)),
    (r#"{"bitor": [1, 2.0]}"#, E(IA, r#"["bitor", 1]"#)),
    (r#"{"bitand": [1, 0]}"#, V("0")),
    (r#"{"bitand": [7, 3]}"#, V("3")),
    (r#"{"bitxor": [0, 1]}"#, V("1")),
    (r#"{"bitxor": [1, 2, 4]}"#, V("7")),
    (r#"{"bitnot": 0}"#, V("-1")),
    (r#"{"bitnot": 1}"#, V("-2")),
    (r#"{"bitnot": 1.5}"#, E(IA, r#"["bitnot"]"#)),
    (r#"{"degrees": 0}"#, V("0.0")),
    (r#"{"radians": 90}"#, V("1.5707963267948966")),
    (r#"{"cos": 120}"#, V("0.8141809705265618")),
    (r#"{"cosh": 120}"#, V("6.520904391968161e51")),
    (r#"{"sin": 0}"#, V("0.0")),
    (r#"{"sinh": 0}"#, V("0.0")),
    (r#"{"hypot": {"hypot": 3, "b": 4}, "b": 0}"#, V("5.0")),
    (r#"{"hypot": 3, "b": "x"}"#, E(IA, r#"["b"]"#)),
    (r#"{"atan": 120}"#, V("1.5624631863547607")),
    (r#"{"acos": 0}"#, V("1.5707963267948966")),
    (r#"{"asin": 0}"#, V("0.0")),
    (r#"{"asin": 2}"#, E(IA, r#"["asin"]"#)),
    (r#"{"log": 100}"#, V("2.0")),
    (r#"{"ln": 1}"#, V("0.0")),
    (r#"{"ln": 0}"#, E(IA, r#"["ln"]"#)),
    (r#"{"exp": 2}"#, V("7.38905609893065")),
    (r#"{"ceil": 67.789}"#, V("68.0")),
    (r#"{"ceil": 5}"#, V("5")),
    (r#"{"floor": 89.1234}"#, V("89.0")),
    (r#"{"floor": -1.5}"#, V("-2.0")),
    (r#"{"floor": "let the bodies hit the "}"#, E(IA, r#"["floor"]"#)),
    (r#"{"sqrt": 9}"#, V("3.0")),
    (r#"{"sqrt": -1}"#, E(IA, r#"["sqrt"]"#)),
    (r#"{"tan": 90}"#, V("-1.995200412208242")),
    (r#"{"tanh": 45}"#, V("1.0")),
    (r#"{"tanh": "45.6"}"#, E(IA, r#"["tanh"]"#)),
    (r#"{"sign": -90}"#, V("-1")),
    (r#"{"sign": 1.2}"#, V("1.0")),
    (r#"{"sign": 0}"#, V("0")),
    (r#"{"pow": 2, "exp": 3}"#, V("8")),
    (r#"{"pow": 0, "exp": 3}"#, V("0")),
    (r#"{"pow": 3}"#, V("9")),
    (r#"{"pow": 2, "exp": -1}"#, V("0.5")),
    (r#"{"pow": 2.0, "exp": 0.5}"#, V("1.4142135623730951")),
    (r#"{"pow": 1, "exp": "n"}"#, E(IA, r#"["exp"]"#)),
    (r#"{"pow": 10, "exp": 19}"#, E(IA, r#"["pow"]"#)),

    // ---- strings ----
    (r#"{"format": "always 100%%", "values": []}"#, V(r#""always 100%""#)),
    (r#"{"format": "always 100%%"}"#, V(r#""always 100%""#)),
    (r#"{"format": "Hi there %s, you have %d points", "values": ["Tom", 9000]}"#, V(r#""Hi there Tom, you have 9000 points""#)),
    (r#"{"format": "%.2f %.5f", "values": [3.14159, 3.14159]}"#, V(r#""3.14 3.14159""#)),
    (r#"{"format": "%3$s%1$s %2$s", "values": ["DB", "rocks", "Fauna"]}"#, V(r#""FaunaDB rocks""#)),
    (r#"{"format": "%.4f", "values": 3.14}"#, V(r#""3.1400""#)),
    (r#"{"format": "%s %d %.2f", "values": ["Hey", 1995, 6.02]}"#, V(r#""Hey 1995 6.02""#)),
    (r#"{"format": "%5s|%-5s|%05d", "values": ["ab", "cd", 42]}"#, V(r#""   ab|cd   |00042""#)),
    (r#"{"format": "%x %o %b %n", "values": [255, 8, true]}"#, V(r#""ff 10 true \n""#)),
    (r#"{"format": "%@ %@", "values": ["a", [1, {"object": {"b": 2.5}}]]}"#, V(r#""\"a\" [1, {b: 2.5}]""#)),
    (r#"{"format": "%s", "values": {"date": "2020-02-03"}}"#, V(r#""2020-02-03""#)),
    (r#"{"format": "%tY-%<tm-%<td", "values": {"time": "2021-03-04T05:06:07Z"}}"#, V(r#""2021-03-04""#)),
    (r#"{"format": "%,d|%e|%.20f", "values": [1234567, 12345.678, 0.1]}"#, V(r#""1,234,567|1.234568e+04|0.10000000000000000000""#)),
    (r#"{"format": "%d", "values": "x"}"#, E(IA, r#"["format"]"#)),
    (r#"{"format": "%s %s", "values": ["x"]}"#, E(IA, r#"["format"]"#)),
    (r#"{"format": "100%", "values": []}"#, E(IA, r#"["format"]"#)),
    (r#"{"concat": ["a", "b", "c"]}"#, V(r#""abc""#)),
    (r#"{"concat": []}"#, V(r#""""#)),
    (r#"{"concat": ["a", "b", "c"], "separator": "."}"#, V(r#""a.b.c""#)),
    (r#"{"concat": "solo"}"#, V(r#""solo""#)),
    (r#"{"concat": ["a", 1]}"#, E(IA, r#"["concat", 1]"#)),
    (r#"{"concat": ["a"], "separator": 1}"#, E(IA, r#"["separator"]"#)),
    (r#"{"casefold": "Hen Wen"}"#, V(r#""hen wen""#)),
    (r#"{"casefold": "Straße"}"#, V(r#""strasse""#)),
    (r#"{"casefold": "\u212B", "normalizer": "NFKCCaseFold"}"#, V(r#""\u00E5""#)),
    (r#"{"casefold": "ABC", "normalizer": "NFD"}"#, V(r#""ABC""#)),
    // The examples of Unicode's UAX #15, as faunadb-python's test_casefold asserts them.
    (r#"{"casefold": "\u212B", "normalizer": "NFD"}"#, V(r#""A\u030A""#)),
    (r#"{"casefold": "\u212B", "normalizer": "NFC"}"#, V(r#""\u00C5""#)),
    (r#"{"casefold": "\u1E9B\u0323", "normalizer": "NFKD"}"#, V(r#""s\u0323\u0307""#)),
    (r#"{"casefold": "\u1E9B\u0323", "normalizer": "NFKC"}"#, V(r#""\u1E69""#)),
    (r#"{"casefold": "\u1E9B\u0323", "normalizer": "NFC"}"#, V(r#""\u1E9B\u0323""#)),
    (r#"{"casefold": "\uFB01 A\u00ADB\u2460"}"#, V(r#""fi ab1""#)),
    (r#"{"casefold": "\u1E9B\u0323"}"#, V(r#""\u1E69""#)),
    (r#"{"casefold": "x", "normalizer": "NFQ"}"#, E(IA, r#"["normalizer"]"#)),
    (r#"{"startswith": "faunadb", "search": "fauna"}"#, V("true")),
    (r#"{"startswith": "faunadb", "search": "F"}"#, V("false")),
    (r#"{"startswith": 1, "search": "F"}"#, E(IA, r#"["startswith"]"#)),
    (r#"{"endswith": "faunadb", "search": "fauna"}"#, V("false")),
    (r#"{"endswith": "faunadb", "search": "db"}"#, V("true")),
    (r#"{"endswith": "faunadb", "search": ""}"#, V("true")),
    (r#"{"endswith": "faunadb", "search": 2}"#, E(IA, r#"["search"]"#)),
    (r#"{"containsstr": "faunadb", "search": "fauna"}"#, V("true")),
    (r#"{"containsstr": "garbage", "search": "bge"}"#, V("false")),
    (r#"{"containsstr": "a big apple", "search": "g a"}"#, V("true")),
    (r#"{"containsstrregex": "faunadb", "pattern": "f(\\w+)a"}"#, V("true")),
    (r#"{"containsstrregex": "test\tdata", "pattern": "\\s"}"#, V("true")),
    (r#"{"containsstrregex": "faunadb", "pattern": "/^\\d*\\.\\d+$/"}"#, V("false")),
    (r#"{"containsstrregex": "ABCDEFGHIJK", "pattern": "[a-z]"}"#, V("false")),
    (r#"{"containsstrregex": "a.b", "pattern": "\\Qa.b\\E"}"#, V("true")),
    (r#"{"containsstrregex": "axb", "pattern": "\\Qa.b\\E"}"#, V("false")),
    (r#"{"containsstrregex": "abc", "pattern": "(a"}"#, E(IA, r#"["pattern"]"#)),
    (r#"{"containsstrregex": "abc", "pattern": "a(?=b)"}"#, E(IA, r#"["pattern"]"#)),
    (r#"{"containsstrregex": "abc", "pattern": "(((a{100}){100}){100}){100}"}"#, E(IA, r#"["pattern"]"#)),
    (r#"{"regexescape": "f(\\w+)a"}"#, V(r#""\\Qf(\\w+)a\\E""#)),
    (r#"{"ngram": "what"}"#, V(r#"["w", "wh", "h", "ha", "a", "at", "t"]"#)),
    (r#"{"ngram": "what", "min": 2, "max": 3}"#, V(r#"["wh", "wha", "ha", "hat", "at"]"#)),
    (r#"{"ngram": ["john", "doe"]}"#, V(r#"["j", "jo", "o", "oh", "h", "hn", "n", "d", "do", "o", "oe", "e"]"#)),
    (r#"{"ngram": ["john", "doe"], "min": 3, "max": 4}"#, V(r#"["joh", "john", "ohn", "doe"]"#)),
    (r#"{"ngram": "abc", "min": 0}"#, E(IA, r#"["min"]"#)),
    (r#"{"ngram": [1]}"#, E(IA, r#"["ngram", 0]"#)),
    (r#"{"findstr": "ABC", "find": "A"}"#, V("0")),
    (r#"{"findstr": "ABC", "find": "A", "start": 0}"#, V("0")),
    (r#"{"findstr": "ABC", "find": "A", "start": 1}"#, V("-1")),
    (r#"{"findstr": "a big apple", "find": "a", "start": 2}"#, V("6")),
    (r#"{"findstr": "ééx", "find": "x"}"#, V("2")),
    (r#"{"findstr": "ABC", "find": "A", "start": "x"}"#, E(IA, r#"["start"]"#)),
    (r#"{"findstrregex": "ABC", "pattern": "A"}"#, V(r#"[{"start": 0, "end": 0, "data": "A"}]"#)),
    (r#"{"findstrregex": "ABCAB", "pattern": "AB"}"#, V(r#"[{"start": 0, "end": 1, "data": "AB"}, {"start": 3, "end": 4, "data": "AB"}]"#)),
    (r#"{"findstrregex": "one fish two Fish", "pattern": "[fF]ish"}"#, V(r#"[{"start": 4, "end": 7, "data": "fish"}, {"start": 13, "end": 16, "data": "Fish"}]"#)),
    (r#"{"findstrregex": "ABCAB", "pattern": "AB", "num_results": 1}"#, V(r#"[{"start": 0, "end": 1, "data": "AB"}]"#)),
    (r#"{"findstrregex": "ABCAB", "pattern": "AB", "start": 1}"#, V(r#"[{"start": 3, "end": 4, "data": "AB"}]"#)),
    (r#"{"findstrregex": "éAéA", "pattern": "A"}"#, V(r#"[{"start": 1, "end": 1, "data": "A"}, {"start": 3, "end": 3, "data": "A"}]"#)),
    (r#"{"length": ""}"#, V("0")),
    (r#"{"length": "ApPle"}"#, V("5")),
    (r#"{"length": "two words"}"#, V("9")),
    (r#"{"length": "héllo😀"}"#, V("6")),
    (r#"{"length": 12}"#, E(IA, r#"["length"]"#)),
    (r#"{"lowercase": "ApPle"}"#, V(r#""apple""#)),
    (r#"{"lowercase": ""}"#, V(r#""""#)),
    (r#"{"lowercase": "İstanbul"}"#, V(r#""i̇stanbul""#)),
    (r#"{"uppercase": "abc def"}"#, V(r#""ABC DEF""#)),
    (r#"{"titlecase": "one fISH tWo FISH"}"#, V(r#""One Fish Two Fish""#)),
    (r#"{"titlecase": "ABC DEF"}"#, V(r#""Abc Def""#)),
    (r#"{"ltrim": "\t\n\t\n  Apple"}"#, V(r#""Apple""#)),
    (r#"{"ltrim": " A B C"}"#, V(r#""A B C""#)),
    (r#"{"rtrim": "A\t\n   "}"#, V(r#""A""#)),
    (r#"{"rtrim": "ABC DE F "}"#, V(r#""ABC DE F""#)),
    (r#"{"trim": "\t\nABC DEF\t\n   "}"#, V(r#""ABC DEF""#)),
    (r#"{"repeat": "A"}"#, V(r#""AA""#)),
    (r#"{"repeat": "ABC", "number": 3}"#, V(r#""ABCABCABC""#)),
    (r#"{"repeat": "ABC", "number": -1}"#, E(IA, r#"["number"]"#)),
    (r#"{"repeat": "ABC", "number": 100000000}"#, E(IA, r#"["repeat"]"#)),
    (r#"{"replacestr": "ABCDE", "find": "AB", "replace": "AA"}"#, V(r#""AACDE""#)),
    (r#"{"replacestr": "One Fish Two Fish", "find": "Fish", "replace": "Cat"}"#, V(r#""One Cat Two Cat""#)),
    (r#"{"replacestrregex": "ABCDE", "pattern": "AB", "replace": "AA"}"#, V(r#""AACDE""#)),
    (r#"{"replacestrregex": "One Fish Two fish", "pattern": "[Ff]ish", "replace": "Cat"}"#, V(r#""One Cat Two Cat""#)),
    (r#"{"replacestrregex": "One Fish Two fish", "pattern": "[Ff]ish", "replace": "Cat", "first": true}"#, V(r#""One Cat Two fish""#)),
    (r#"{"replacestrregex": "John Smith", "pattern": "(\\w+) (\\w+)", "replace": "$2, $1a"}"#, V(r#""Smith, Johna""#)),
    (r#"{"replacestrregex": "a", "pattern": "a", "replace": "\\$1"}"#, V(r#""$1""#)),
    (r#"{"replacestrregex": "a", "pattern": "a", "replace": "$1"}"#, E(IA, r#"["replace"]"#)),
    (r#"{"space": 0}"#, V(r#""""#)),
    (r#"{"space": 5}"#, V(r#""     ""#)),
    (r#"{"space": -1}"#, E(IA, r#"["space"]"#)),
    (r#"{"substring": "ABCDEF", "start": -3}"#, V(r#""DEF""#)),
    (r#"{"substring": "ABCDEF", "start": 0, "length": 3}"#, V(r#""ABC""#)),
    (r#"{"substring": "ABCDEF", "start": 4, "length": 10}"#, V(r#""EF""#)),
    (r#"{"substring": "ABCDEF", "start": 10}"#, V(r#""""#)),
    (r#"{"substring": "héllo", "start": 1, "length": 3}"#, V(r#""éll""#)),
    (r#"{"substring": "ABC", "start": 0, "length": -1}"#, E(IA, r#"["length"]"#)),

    // ---- time ----
    (r#"{"time": "1970-01-01T00:00:00.123456789Z"}"#, V(r#"{"@ts": "1970-01-01T00:00:00.123456789Z"}"#)),
    (r#"{"time": "2015-02-20T06:30:00+01:00"}"#, V(r#"{"@ts": "2015-02-20T05:30:00Z"}"#)),
    (r#"{"time": "now"}"#, V(r#"{"@ts": "2023-11-14T22:13:20Z"}"#)),
    (r#"{"now": null}"#, V(r#"{"@ts": "2023-11-14T22:13:20Z"}"#)),
    (r#"{"time": "yesterday"}"#, E(IA, r#"["time"]"#)),
    (r#"{"time": 5}"#, E(IA, r#"["time"]"#)),
    (r#"{"epoch": 12, "unit": "second"}"#, V(r#"{"@ts": "1970-01-01T00:00:12Z"}"#)),
    (r#"{"epoch": 123456789, "unit": "nanosecond"}"#, V(r#"{"@ts": "1970-01-01T00:00:00.123456789Z"}"#)),
    (r#"{"epoch": 1500, "unit": "milliseconds"}"#, V(r#"{"@ts": "1970-01-01T00:00:01.500Z"}"#)),
    (r#"{"epoch": 1, "unit": "half day"}"#, V(r#"{"@ts": "1970-01-01T12:00:00Z"}"#)),
    (r#"{"epoch": 1, "unit": "fortnight"}"#, E(IA, r#"["unit"]"#)),
    (r#"{"epoch": 9223372036854775807, "unit": "day"}"#, E(IA, r#"["epoch"]"#)),
    (r#"{"date": "1970-01-01"}"#, V(r#"{"@date": "1970-01-01"}"#)),
    (r#"{"date": "1970-13-01"}"#, E(IA, r#"["date"]"#)),
    (r#"{"time_add": {"epoch": 1, "unit": "hour"}, "offset": 577, "unit": "hour"}"#, V(r#"{"@ts": "1970-01-25T02:00:00Z"}"#)),
    (r#"{"time_add": {"epoch": 2, "unit": "hour"}, "offset": 24, "unit": "days"}"#, V(r#"{"@ts": "1970-01-25T02:00:00Z"}"#)),
    (r#"{"time_add": {"date": "1970-01-01"}, "offset": 1, "unit": "day"}"#, V(r#"{"@date": "1970-01-02"}"#)),
    (r#"{"time_add": {"date": "1970-01-01"}, "offset": 1, "unit": "hour"}"#, E(IA, r#"["unit"]"#)),
    (r#"{"time_add": "x", "offset": 1, "unit": "hour"}"#, E(IA, r#"["time_add"]"#)),
    (r#"{"time_add": {"epoch": 0, "unit": "second"}, "offset": 1.5, "unit": "hour"}"#, E(IA, r#"["offset"]"#)),
    (r#"{"time_subtract": {"epoch": 1, "unit": "hour"}, "offset": 1, "unit": "hour"}"#, V(r#"{"@ts": "1970-01-01T00:00:00Z"}"#)),
    (r#"{"time_subtract": {"epoch": 1, "unit": "day"}, "offset": 24, "unit": "hour"}"#, V(r#"{"@ts": "1970-01-01T00:00:00Z"}"#)),
    (r#"{"time_subtract": {"epoch": 0, "unit": "second"}, "offset": 1, "unit": "hour"}"#, V(r#"{"@ts": "1969-12-31T23:00:00Z"}"#)),
    (r#"{"time_subtract": {"date": "1970-01-01"}, "offset": 1, "unit": "day"}"#, V(r#"{"@date": "1969-12-31"}"#)),
    (r#"{"time_diff": {"epoch": 0, "unit": "second"}, "other": {"epoch": 1, "unit": "second"}, "unit": "second"}"#, V("1")),
    (r#"{"time_diff": {"epoch": 24, "unit": "hour"}, "other": {"epoch": 1, "unit": "day"}, "unit": "day"}"#, V("0")),
    (r#"{"time_diff": {"epoch": 90, "unit": "minute"}, "other": {"epoch": 0, "unit": "second"}, "unit": "hour"}"#, V("-1")),
    (r#"{"time_diff": {"date": "1970-01-01"}, "other": {"date": "1970-01-02"}, "unit": "day"}"#, V("1")),
    (r#"{"time_diff": {"date": "1970-01-01"}, "other": {"now": null}, "unit": "day"}"#, E(IA, r#"["other"]"#)),
    (r#"{"to_seconds": {"epoch": 0, "unit": "second"}}"#, V("0")),
    (r#"{"to_seconds": {"epoch": 2147483648, "unit": "second"}}"#, V("2147483648")),
    (r#"{"to_seconds": 2147483648000000}"#, V("2147483648")),
    (r#"{"to_millis": {"epoch": 1552733214259, "unit": "second"}}"#, V("1552733214259000")),
    (r#"{"to_millis": 2147483648000000}"#, V("2147483648000")),
    (r#"{"to_micros": {"epoch": 1552733214259, "unit": "second"}}"#, V("1552733214259000000")),
    (r#"{"to_micros": 0}"#, V("0")),
    (r#"{"to_nanos": {"epoch": 1, "unit": "second"}}"#, V("1000000000")),
    (r#"{"to_seconds": "x"}"#, E(IA, r#"["to_seconds"]"#)),
    (r#"{"day_of_month": {"epoch": 2147483648, "unit": "second"}}"#, V("19")),
    (r#"{"day_of_month": 0}"#, V("1")),
    (r#"{"day_of_week": {"epoch": 0, "unit": "second"}}"#, V("4")),
    (r#"{"day_of_week": 2147483648000000}"#, V("2")),
    (r#"{"day_of_year": {"epoch": 2147483648, "unit": "second"}}"#, V("19")),
    (r#"{"month": {"time": "2021-07-04T00:00:00Z"}}"#, V("7")),
    (r#"{"year": {"epoch": 2147483648, "unit": "second"}}"#, V("2038")),
    (r#"{"year": {"date": "1999-12-31"}}"#, V("1999")),
    (r#"{"hour": {"epoch": 0, "unit": "second"}}"#, V("0")),
    (r#"{"hour": {"time": "2021-07-04T13:14:15Z"}}"#, V("13")),
    (r#"{"minute": {"time": "2021-07-04T13:14:15Z"}}"#, V("14")),
    (r#"{"second": {"time": "2021-07-04T13:14:15Z"}}"#, V("15")),
    (r#"{"second": true}"#, E(IA, r#"["second"]"#)),
    (r#"{"to_time": "1970-01-01T00:00:00Z"}"#, V(r#"{"@ts": "1970-01-01T00:00:00Z"}"#)),
    (r#"{"to_time": {"date": "2020-01-02"}}"#, V(r#"{"@ts": "2020-01-02T00:00:00Z"}"#)),
    (r#"{"to_time": [1]}"#, E(IA, r#"["to_time"]"#)),
    (r#"{"to_date": "1970-01-01"}"#, V(r#"{"@date": "1970-01-01"}"#)),
    (r#"{"to_date": {"now": null}}"#, V(r#"{"@date": "2023-11-14"}"#)),
    (r#"{"to_date": "nope"}"#, E(IA, r#"["to_date"]"#)),

    // ---- types: checks ----
    (r#"[{"is_number": 90}, {"is_number": 3.14}, {"is_number": "1"}]"#, V("[true, true, false]")),
    (r#"[{"is_double": 3.14}, {"is_double": 3}]"#, V("[true, false]")),
    (r#"[{"is_integer": 3}, {"is_integer": 3.0}]"#, V("[true, false]")),
    (r#"[{"is_boolean": true}, {"is_boolean": null}]"#, V("[true, false]")),
    (r#"[{"is_null": null}, {"is_null": 0}]"#, V("[true, false]")),
    (r#"[{"is_bytes": {"@bytes": "DAMEBQ=="}}, {"is_bytes": "DAMEBQ=="}]"#, V("[true, false]")),
    (r#"[{"is_timestamp": {"now": null}}, {"is_timestamp": {"date": "1970-01-01"}}]"#, V("[true, false]")),
    (r#"[{"is_date": {"date": "1970-01-01"}}, {"is_date": {"to_date": {"now": null}}}, {"is_date": {"now": null}}]"#, V("[true, true, false]")),
    (r#"[{"is_string": "a"}, {"is_string": 1}]"#, V("[true, false]")),
    (r#"[{"is_array": [1, 2]}, {"is_array": {"object": {}}}]"#, V("[true, false]")),
    (r#"[{"is_object": {"object": {"x": 10}}}, {"is_object": [1]}]"#, V("[true, false]")),
    (r#"[{"is_ref": {"@ref": {"id": "collections"}}}, {"is_ref": "x"}]"#, V("[true, false]")),
    (r#"[{"is_set": {"@set": {"match": {"@ref": {"id": "i", "collection": {"@ref": {"id": "indexes"}}}}}}}, {"is_set": {"@ref": {"id": "collections"}}}, {"is_set": [1]}]"#, V("[true, true, false]")),
    (r#"[{"is_lambda": {"query": {"lambda": "x", "expr": {"var": "x"}}}}, {"is_lambda": "x"}]"#, V("[true, false]")),
    (r#"[{"is_collection": {"@ref": {"id": "c", "collection": {"@ref": {"id": "collections"}}}}}, {"is_collection": {"@ref": {"id": "collections"}}}, {"is_collection": {"@ref": {"id": "i", "collection": {"@ref": {"id": "indexes"}}}}}]"#, V("[true, true, false]")),
    (r#"[{"is_database": {"@ref": {"id": "d", "collection": {"@ref": {"id": "databases"}}}}}, {"is_database": "d"}]"#, V("[true, false]")),
    (r#"[{"is_index": {"@ref": {"id": "i", "collection": {"@ref": {"id": "indexes"}}}}}, {"is_index": {"@ref": {"id": "i", "collection": {"@ref": {"id": "functions"}}}}}]"#, V("[true, false]")),
    (r#"[{"is_function": {"@ref": {"id": "f", "collection": {"@ref": {"id": "functions"}}}}}, {"is_function": {"object": {"ref": {"@ref": {"id": "f", "collection": {"@ref": {"id": "functions"}}}}, "ts": 1, "name": "f"}}}]"#, V("[true, true]")),
    (r#"[{"is_key": {"@ref": {"id": "1", "collection": {"@ref": {"id": "keys"}}}}}, {"is_token": {"@ref": {"id": "1", "collection": {"@ref": {"id": "tokens"}}}}}, {"is_credentials": {"@ref": {"id": "1", "collection": {"@ref": {"id": "credentials"}}}}}, {"is_role": {"@ref": {"id": "r", "collection": {"@ref": {"id": "roles"}}}}}]"#, V("[true, true, true, true]")),
    (r#"[{"is_key": {"@ref": {"id": "1", "collection": {"@ref": {"id": "tokens"}}}}}, {"is_role": 1}]"#, V("[false, false]")),
    (r#"[{"is_doc": {"@ref": {"id": "1", "collection": {"@ref": {"id": "c", "collection": {"@ref": {"id": "collections"}}}}}}}, {"is_doc": {"object": {"ref": {"@ref": {"id": "1", "collection": {"@ref": {"id": "c", "collection": {"@ref": {"id": "collections"}}}}}}, "ts": 1, "data": {"object": {}}}}}, {"is_doc": {"object": {"x": 1}}}, {"is_doc": {"@ref": {"id": "collections"}}}]"#, V("[true, true, false, false]")),

    // ---- types: conversions ----
    (r#"{"to_string": 42}"#, V(r#""42""#)),
    (r#"{"to_string": "42"}"#, V(r#""42""#)),
    (r#"{"to_string": {"to_double": 10}}"#, V(r#""10.0""#)),
    (r#"{"to_string": 1e21}"#, V(r#""1.0E21""#)),
    (r#"{"to_string": true}"#, V(r#""true""#)),
    (r#"{"to_string": null}"#, V(r#""null""#)),
    (r#"{"to_string": {"epoch": 1, "unit": "second"}}"#, V(r#""1970-01-01T00:00:01Z""#)),
    (r#"{"to_string": [1]}"#, E(IA, r#"["to_string"]"#)),
    (r#"{"to_number": "42"}"#, V("42")),
    (r#"{"to_number": 42}"#, V("42")),
    (r#"{"to_number": "4.5"}"#, V("4.5")),
    (r#"{"to_number": "abc"}"#, E(IA, r#"["to_number"]"#)),
    (r#"{"to_number": "inf"}"#, E(IA, r#"["to_number"]"#)),
    (r#"{"to_double": 42}"#, V("42.0")),
    (r#"{"to_double": "3.14"}"#, V("3.14")),
    (r#"{"to_double": []}"#, E(IA, r#"["to_double"]"#)),
    (r#"{"to_integer": 4.2343}"#, V("4")),
    (r#"{"to_integer": 4.8999}"#, V("4")),
    (r#"{"to_integer": -4.8}"#, V("-4")),
    (r#"{"to_integer": "10"}"#, V("10")),
    (r#"{"to_integer": {"object": {"x": 1}}}"#, E(IA, r#"["to_integer"]"#)),
    (r#"{"to_integer": 1e300}"#, E(IA, r#"["to_integer"]"#)),
    (r#"{"to_object": [["x", 0], ["y", 1]]}"#, V(r#"{"x": 0, "y": 1}"#)),
    (r#"{"to_object": "hey there"}"#, E(IA, r#"["to_object"]"#)),
    (r#"{"to_object": [["x", 0], [1, 1]]}"#, E(IA, r#"["to_object", 1]"#)),
    (r#"{"to_array": {"object": {"x": 0, "y": 1}}}"#, V(r#"[["x", 0], ["y", 1]]"#)),
    (r#"{"to_object": {"to_array": {"object": {"k0": 10, "k1": 20}}}}"#, V(r#"{"k0": 10, "k1": 20}"#)),
    (r#"{"to_array": 23}"#, E(IA, r#"["to_array"]"#)),

    // ---- select ----
    (r#"{"select": "a", "from": {"object": {"a": {"object": {"b": 1}}}}}"#, V(r#"{"b": 1}"#)),
    (r#"{"select": ["a", "b"], "from": {"object": {"a": {"object": {"b": 1}}}}}"#, V("1")),
    (r#"{"select": ["a", "c"], "from": {"object": {"a": {"object": {"b": 1}}}}, "default": "default"}"#, V(r#""default""#)),
    (r#"{"select": "c", "from": {"object": {"a": 1}}, "default": null}"#, V("null")),
    (r#"{"select": "c", "from": {"object": {"a": 1}}}"#, E(NF, r#"["from"]"#)),
    (r#"{"select": 2, "from": [1, 2, 3]}"#, V("3")),
    (r#"{"select": 3, "from": [1, 2, 3]}"#, E(NF, r#"["from"]"#)),
    (r#"{"select": -1, "from": [1, 2, 3]}"#, E(NF, r#"["from"]"#)),
    (r#"{"select": "a", "from": [1]}"#, E(NF, r#"["from"]"#)),
    (r#"{"select": [0, "x"], "from": [{"object": {"x": "y"}}]}"#, V(r#""y""#)),
    (r#"{"select": [], "from": 5}"#, V("5")),
    (r#"{"select": true, "from": 5}"#, E(IA, r#"["select"]"#)),
    (r#"{"select": ["a", 1.5], "from": 5}"#, E(IA, r#"["select", 1]"#)),
    // Pages index their data.
    (r#"{"select": 0, "from": {"object": {"data": [5, 6], "after": [6]}}}"#, V("5")),
    (r#"{"select": [1], "from": {"count": {"object": {"data": [5, 6]}}}}"#, E(NF, r#"["from"]"#)),
    (r#"{"select": [0], "from": {"count": {"object": {"data": [5, 6]}}}}"#, V("2")),
    (r#"{"select": 0, "from": {"object": {"data": [5, 6], "x": 1}}}"#, E(NF, r#"["from"]"#)),
    // ---- merge ----
    (r#"{"merge": {"object": {"x": 1, "y": 2}}, "with": {"object": {"z": 3}}}"#, V(r#"{"x": 1, "y": 2, "z": 3}"#)),
    (r#"{"merge": {"object": {}}, "with": {"object": {"a": 1}}}"#, V(r#"{"a": 1}"#)),
    (r#"{"merge": {"object": {"a": 1}}, "with": [{"object": {"b": 2}}, {"object": {"c": 3}}, {"object": {"a": 5}}]}"#, V(r#"{"a": 5, "b": 2, "c": 3}"#)),
    (r#"{"merge": {"object": {"a": 1, "b": 2}}, "with": {"object": {"a": null}}}"#, V(r#"{"b": 2}"#)),
    (r#"{"merge": {"object": {"a": 1, "b": 2, "c": 3}}, "with": {"object": {"a": "a", "b": "b", "c": "c"}}, "lambda": {"lambda": ["key", "left", "right"], "expr": {"var": "right"}}}"#, V(r#"{"a": "a", "b": "b", "c": "c"}"#)),
    (r#"{"merge": {"object": {"a": 1, "b": 2}}, "with": {"object": {"a": 10, "c": 3}}, "lambda": {"lambda": ["key", "left", "right"], "expr": {"if": {"is_null": {"var": "left"}}, "then": {"var": "right"}, "else": {"add": [{"var": "left"}, {"var": "right"}]}}}}"#, V(r#"{"a": 11, "b": 2, "c": 3}"#)),
    (r#"{"merge": {"object": {"a": 1}}, "with": {"object": {"a": 2}}, "lambda": {"query": {"lambda": ["k", "l", "r"], "expr": null}}}"#, V(r#"{}"#)),
    (r#"{"merge": 1, "with": {"object": {}}}"#, E(IA, r#"["merge"]"#)),
    (r#"{"merge": {"object": {}}, "with": [{"object": {}}, 2]}"#, E(IA, r#"["with", 1]"#)),
    (r#"{"merge": {"object": {}}, "with": "x"}"#, E(IA, r#"["with"]"#)),
    (r#"{"merge": {"object": {}}, "with": {"object": {"a": 1}}, "lambda": 5}"#, E(IA, r#"["lambda"]"#)),
    (r#"{"select": "id", "from": {"@ref": {"id": "7", "collection": {"@ref": {"id": "c", "collection": {"@ref": {"id": "collections"}}}}}}}"#, V(r#""7""#)),
    (r#"{"select": ["collection"], "from": {"@ref": {"id": "7", "collection": {"@ref": {"id": "c", "collection": {"@ref": {"id": "collections"}}}}}}}"#, V(r#"{"@ref": {"id": "c", "collection": {"@ref": {"id": "collections"}}}}"#)),
    (r#"{"select": ["collection", "id"], "from": {"@ref": {"id": "7", "collection": {"@ref": {"id": "c", "collection": {"@ref": {"id": "collections"}}}}}}}"#, V(r#""c""#)),
    (r#"{"select": "data", "from": {"@ref": {"id": "7", "collection": {"@ref": {"id": "c", "collection": {"@ref": {"id": "collections"}}}}}}}"#, E(NF, r#"["from"]"#)),
    (r#"{"select": "x", "from": {"add": [1, "a"]}}"#, E(IA, r#"["from", "add", 1]"#)),
    (r#"{"select_all": "foo", "from": [{"object": {"foo": "bar"}}, {"object": {"foo": "baz"}}]}"#, V(r#"["bar", "baz"]"#)),
    (r#"{"select_all": ["foo", 0], "from": [{"object": {"foo": [0, 1]}}, {"object": {"foo": [2, 3]}}]}"#, V("[0, 2]")),
    (r#"{"select_all": ["a", "b"], "from": {"object": {"a": [{"object": {"b": 1}}, {"object": {"c": 2}}, {"object": {"b": 3}}]}}}"#, V("[1, 3]")),
    (r#"{"select_all": "x", "from": {"object": {"y": 1}}}"#, V("[]")),
    (r#"{"select_all": null, "from": []}"#, E(IA, r#"["select_all"]"#)),

    // ---- parsing of shapes ----
    (r#"{"time_add": {"now": null}, "offset": 1}"#, E(IE, r#"[]"#)),
];

fn eval(q: &str) -> Result<Json, tally_fql::FqlError> {
    let store = tally_storage::MemStore::new();
    let snap = store.snapshot().expect("snapshot");
    let tx = tally_fql::model::Tx::new(&*snap, TXN_TS);
    let mut ev = tally_fql::eval::Eval::new(tx, tally_fql::eval::Mode::ReadOnly, tally_fql::auth::Auth::root_admin());
    let json: Json = serde_json::from_str(q).unwrap_or_else(|e| panic!("bad test JSON {q}: {e}"));
    let e = tally_fql::expr::parse(&json)?;
    let v = ev.eval(&e)?;
    Ok(serde_json::from_str(&tally_value::to_json_string(&v)).expect("wire JSON"))
}

#[test]
fn pure_functions() {
    let mut failures = Vec::new();
    for (q, want) in CASES {
        let got = eval(q);
        match (want, &got) {
            (V(w), Ok(g)) => {
                let w: Json = serde_json::from_str(w).unwrap_or_else(|e| panic!("bad expected JSON {w}: {e}"));
                if &w != g {
                    failures.push(format!("{q}\n   want {w}\n    got {g}"));
                }
            }
            (E(code, pos), Err(err)) => {
                let pos: Json = serde_json::from_str(pos).expect("position JSON");
                let j = err.to_json();
                if err.code != *code || j["position"] != pos {
                    failures.push(format!("{q}\n   want error {code} at {pos}\n    got {j}"));
                }
                if err.description.is_empty() {
                    failures.push(format!("{q}\n   error without description"));
                }
            }
            (V(w), Err(err)) => failures.push(format!("{q}\n   want {w}\n    got error {}", err.to_json())),
            (E(code, pos), Ok(g)) => failures.push(format!("{q}\n   want error {code} at {pos}\n    got {g}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
}

/// `Add(1, "two")` as the faunadb-python error tests assert it.
#[test]
fn add_type_error_shape() {
    let err = eval(r#"{"add": [1, "two"]}"#).unwrap_err();
    assert_eq!(err.code, "invalid argument");
    assert_eq!(err.to_json()["position"], serde_json::json!(["add", 1]));
    assert_eq!(err.description, "Number expected, String provided.");
}

/// The type checks over the value list of faunadb-python's `test_typecheckfns` that do not
/// need stored documents.
#[test]
fn typecheck_counts() {
    let coll = r#"{"@ref": {"id": "typecheck_coll", "collection": {"@ref": {"id": "collections"}}}}"#;
    let idx = r#"{"@ref": {"id": "typecheck_index", "collection": {"@ref": {"id": "indexes"}}}}"#;
    let vals = [
        "null".to_string(),
        r#"{"@bytes": "DAMEBQ=="}"#.into(),
        r#"{"@ref": {"id": "1", "collection": {"@ref": {"id": "credentials"}}}}"#.into(),
        "90".into(),
        "3.14".into(),
        "true".into(),
        r#"{"to_date": {"now": null}}"#.into(),
        r#"{"date": "1970-01-01"}"#.into(),
        r#"{"now": null}"#.into(),
        r#"{"epoch": 1, "unit": "second"}"#.into(),
        r#"{"time": "1970-01-01T00:00:00Z"}"#.into(),
        r#"{"object": {"x": 10}}"#.into(),
        r#"{"@ref": {"id": "collections"}}"#.into(),
        format!(r#"{{"@set": {{"match": {idx}}}}}"#),
        "[1, 2, 3]".into(),
        r#""a string""#.into(),
        coll.into(),
        idx.into(),
        r#"{"@ref": {"id": "typecheck_db", "collection": {"@ref": {"id": "databases"}}}}"#.into(),
        r#"{"query": {"lambda": "x", "expr": {"var": "x"}}}"#.into(),
    ];
    let list = format!("[{}]", vals.join(", "));
    let count = |f: &str| -> i64 {
        let q = format!(
            r#"{{"let": [{{"vals": {list}}}], "in": {{"add": [0, {}]}}}}"#,
            (0..vals.len())
                .map(|i| format!(
                    r#"{{"if": {{"{f}": {{"select": {i}, "from": {{"var": "vals"}}}}}}, "then": 1, "else": 0}}"#
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        eval(&q).unwrap_or_else(|e| panic!("{f}: {}", e.to_json())).as_i64().unwrap()
    };
    assert_eq!(count("is_array"), 1);
    assert_eq!(count("is_boolean"), 1);
    assert_eq!(count("is_bytes"), 1);
    assert_eq!(count("is_collection"), 2);
    assert_eq!(count("is_credentials"), 1);
    assert_eq!(count("is_database"), 1);
    assert_eq!(count("is_date"), 2);
    assert_eq!(count("is_double"), 1);
    assert_eq!(count("is_integer"), 1);
    assert_eq!(count("is_index"), 1);
    assert_eq!(count("is_null"), 1);
    assert_eq!(count("is_number"), 2);
    assert_eq!(count("is_object"), 1);
    assert_eq!(count("is_ref"), 5);
    assert_eq!(count("is_set"), 2);
    assert_eq!(count("is_string"), 1);
    assert_eq!(count("is_timestamp"), 3);
    assert_eq!(count("is_lambda"), 1);
}
