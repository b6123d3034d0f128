//! A strict parser for the Prometheus text exposition format 0.0.4, for checking what
//! `GET /metrics` serves: `# HELP` and `# TYPE` at most once per family and before its
//! samples, every sample of a declared family, metric and label names valid, label
//! values with only the three escapes, values numbers, no duplicate series.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Family name -> type (`counter`, `gauge`, ...).
    pub types: HashMap<String, String>,
    /// Family name -> help text (unescaped).
    pub help: HashMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the one sample named `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        match found.as_slice() {
            [one] => Some(one.value),
            _ => None,
        }
    }

    /// Like [`Exposition::get`], panicking with the text's names when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no single sample {name}{labels:?} in {:#?}", self.samples))
    }
}

fn valid_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// The family a sample name belongs to (histogram/summary suffixes fold into it).
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.contains_key(base) {
                return base;
            }
        }
    }
    name
}

/// Parses `text`; any deviation from the format is an error naming the line.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    let mut seen_samples: HashSet<String> = HashSet::new();
    let mut series: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a line feed".into());
    }
    for (i, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, tail) = (parts.next(), parts.next(), parts.next());
            match (kw, name) {
                (Some("TYPE"), Some(name)) => {
                    let t = tail.unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(bad("unknown type"));
                    }
                    if !valid_metric_name(name) {
                        return Err(bad("bad metric name"));
                    }
                    if seen_samples.contains(name) {
                        return Err(bad("TYPE after the family's samples"));
                    }
                    if e.types.insert(name.to_owned(), t.to_owned()).is_some() {
                        return Err(bad("second TYPE line for the family"));
                    }
                }
                (Some("HELP"), Some(name)) => {
                    if !valid_metric_name(name) {
                        return Err(bad("bad metric name"));
                    }
                    let help = unescape(tail.unwrap_or(""), false).map_err(|w| bad(&w))?;
                    if e.help.insert(name.to_owned(), help).is_some() {
                        return Err(bad("second HELP line for the family"));
                    }
                }
                _ => {} // a plain comment
            }
            continue;
        }
        let (name, after) = match line.find(['{', ' ']) {
            Some(p) => line.split_at(p),
            None => return Err(bad("no value")),
        };
        if !valid_metric_name(name) {
            return Err(bad("bad metric name"));
        }
        let mut labels = BTreeMap::new();
        let rest = if let Some(body) = after.strip_prefix('{') {
            let (parsed, rest) = parse_labels(body).map_err(|w| bad(&w))?;
            for (k, v) in parsed {
                if labels.insert(k, v).is_some() {
                    return Err(bad("label repeated"));
                }
            }
            rest
        } else {
            after
        };
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| bad("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| bad("value is not a number"))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| bad("timestamp is not an integer"))?;
        }
        if fields.next().is_some() {
            return Err(bad("trailing text"));
        }
        let family = family_of(name, &e.types).to_owned();
        if !e.types.contains_key(&family) {
            return Err(bad("sample without a TYPE line for its family"));
        }
        if e.types[&family] == "counter" && !name.ends_with("_total") {
            return Err(bad("a counter's name should end in _total"));
        }
        seen_samples.insert(family);
        if !series.insert((name.to_owned(), labels.clone())) {
            return Err(bad("duplicate series"));
        }
        e.samples.push(Sample { name: name.to_owned(), labels, value });
    }
    Ok(e)
}

/// Label names and values, in order.
type Labels = Vec<(String, String)>;

/// Parses `k="v",k2="v2"}` and returns the labels and the text after `}`.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((out, after));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let body = rest[eq + 1..].strip_prefix('"').ok_or("label value not quoted")?;
        // Find the closing quote, skipping escaped characters.
        let mut end = None;
        let mut esc = false;
        for (i, c) in body.char_indices() {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or("unterminated label value")?;
        out.push((name.to_owned(), unescape(&body[..end], true)?));
        rest = &body[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

/// Undoes `\\`, `\n` and (in label values) `\"`; any other escape is an error.
fn unescape(s: &str, quote: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            if c == '\n' {
                return Err("raw line feed".into());
            }
            out.push(c);
            continue;
        }
        match it.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quote => out.push('"'),
            other => return Err(format!("bad escape \\{other:?}")),
        }
    }
    Ok(out)
}

#[test]
fn parser_accepts_the_format_and_rejects_mistakes() {
    let good = "# HELP a_total Things \\\\ done.\n# TYPE a_total counter\n\
                a_total{x=\"q\\\"uo\\\\te\\n\",y=\"\"} 3\na_total 1 1700000000\n# plain comment\n";
    let e = parse(good).expect("valid");
    assert_eq!(e.value("a_total", &[("x", "q\"uo\\te\n")]), 3.0);
    assert_eq!(e.help["a_total"], "Things \\ done.");
    for bad in [
        "a_total 1\n",                                                      // no TYPE
        "# TYPE a_total counter\na_total{x=\"1\"} 1\na_total{x=\"1\"} 2\n", // duplicate
        "# TYPE a_total counter\na_total{x=1} 1\n",                         // unquoted
        "# TYPE a_total counter\na_total{x=\"\\t\"} 1\n",                   // bad escape
        "# TYPE a_total counter\na_total one\n",                            // value
        "# TYPE a gauge\n# TYPE a gauge\n",                                 // TYPE twice
        "# TYPE a_total counter\na_total 1",                                // no final LF
        "# TYPE a counter\na 1\n", // counter without _total
        "# TYPE 0a gauge\n",       // bad name
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}
