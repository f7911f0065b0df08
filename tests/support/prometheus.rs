//! A strict parser for the Prometheus text exposition format (0.0.4), for
//! tests of `/metrics`: it rejects what a Prometheus server would reject
//! (bad names, unterminated label values, unparsable values, a second TYPE
//! line, a TYPE after its samples, unknown types) and lets a test read one
//! sample's value.
//!
//! ```ignore
//! let m = prometheus::parse(&body)?;
//! let n = m.value("revgate_requests_total", &[("route", "default"), ("outcome", "revoked")]);
//! ```
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name, e.g. `revgate_upstream_seconds_bucket`.
    pub name: String,
    /// Labels, unescaped.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A parsed exposition.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    /// `# TYPE` of each family.
    pub types: HashMap<String, String>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample named `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// The sum of every sample named `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// The `# TYPE` of family `name`.
    pub fn family_type(&self, name: &str) -> Option<&str> {
        self.types.get(name).map(String::as_str)
    }
}

fn is_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    let first_ok = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    match chars.next() {
        Some(c) if first_ok(c) => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// The family a sample name belongs to, given the TYPE lines seen.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base;
            }
        }
    }
    name
}

/// Parses `text`; the error names the line.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut sampled: HashSet<String> = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let err = |m: &str| format!("line {n}: {m}: {line:?}");
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("TYPE") => {
                    let name = parts.next().ok_or_else(|| err("TYPE without a name"))?;
                    let ty = parts
                        .next()
                        .ok_or_else(|| err("TYPE without a type"))?
                        .trim();
                    if !is_name(name, true) {
                        return Err(err("bad metric name"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                        return Err(err("unknown type"));
                    }
                    if sampled.contains(name) {
                        return Err(err("TYPE after the family's samples"));
                    }
                    if out.types.insert(name.into(), ty.into()).is_some() {
                        return Err(err("second TYPE line"));
                    }
                }
                Some("HELP") => {
                    let name = parts.next().ok_or_else(|| err("HELP without a name"))?;
                    if !is_name(name, true) {
                        return Err(err("bad metric name"));
                    }
                }
                _ => {} // a plain comment
            }
            continue;
        }

        // name [{labels}] value [timestamp]
        let name_end = line.find(['{', ' ']).ok_or_else(|| err("no value"))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(err("bad metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            let end;
            loop {
                // label name, or '}'
                while chars.peek().is_some_and(|(_, c)| *c == ' ') {
                    chars.next();
                }
                let Some(&(start, c)) = chars.peek() else {
                    return Err(err("unterminated labels"));
                };
                if c == '}' {
                    end = start + 1;
                    break;
                }
                let mut key_end = start;
                while let Some(&(j, c)) = chars.peek() {
                    if c == '=' {
                        break;
                    }
                    key_end = j + c.len_utf8();
                    chars.next();
                }
                let key = after[start..key_end].trim();
                if !is_name(key, false) {
                    return Err(err("bad label name"));
                }
                if chars.next().map(|(_, c)| c) != Some('=')
                    || chars.next().map(|(_, c)| c) != Some('"')
                {
                    return Err(err("expected =\""));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => return Err(err("unterminated label value")),
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return Err(err("bad escape")),
                        },
                        Some((_, '\n')) => return Err(err("raw newline in a label value")),
                        Some((_, c)) => value.push(c),
                    }
                }
                if labels.insert(key.to_string(), value).is_some() {
                    return Err(err("duplicate label"));
                }
                match chars.next() {
                    Some((_, ',')) => continue,
                    Some((j, '}')) => {
                        end = j + 1;
                        break;
                    }
                    _ => return Err(err("expected , or }")),
                }
            }
            rest = &after[end..];
        }
        let mut fields = rest.split_ascii_whitespace();
        let value = fields
            .next()
            .and_then(parse_value)
            .ok_or_else(|| err("bad value"))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp"))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields"));
        }
        let family = family_of(name, &out.types);
        if out.types.get(family).map(String::as_str) == Some("histogram")
            && name.ends_with("_bucket")
            && !labels.contains_key("le")
        {
            return Err(err("histogram bucket without le"));
        }
        sampled.insert(family.to_string());
        out.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}
