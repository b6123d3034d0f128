//! Reading the fields of a JSON request body: every field named in errors, unknown
//! fields refused, wrong types reported with the type expected. Untrusted input:
//! nothing here panics.

use serde_json::{Map, Value};

use super::SwitchError;

/// The fields of one JSON object, taken one by one; [`Fields::finish`] refuses the
/// ones nobody took.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    taken: Vec<&'a str>,
}

/// The body as a JSON object.
pub fn object(body: &Value) -> Result<&Map<String, Value>, SwitchError> {
    body.as_object().ok_or_else(|| {
        SwitchError::bad_request(None, "the request body must be a JSON object".to_string())
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl<'a> Fields<'a> {
    /// Starts reading `obj`.
    pub fn new(obj: &'a Map<String, Value>) -> Self {
        Self { obj, taken: Vec::new() }
    }

    /// Field `k` as it is, if present.
    pub fn raw(&mut self, k: &'a str) -> Option<&'a Value> {
        self.taken.push(k);
        self.obj.get(k)
    }

    /// A string field; `required` makes its absence an error.
    pub fn string(&mut self, k: &'a str, required: bool) -> Result<Option<&'a str>, SwitchError> {
        match self.raw(k) {
            None if required => Err(SwitchError::bad_request(Some(k), "missing field".into())),
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(SwitchError::bad_request(
                Some(k),
                format!("must be string, not {}", type_name(v)),
            )),
        }
    }

    /// An integer field (absent: `None`).
    pub fn integer(&mut self, k: &'a str) -> Result<Option<i64>, SwitchError> {
        match self.raw(k) {
            None => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            Some(Value::Number(n)) if n.is_u64() => {
                Err(SwitchError::bad_request(Some(k), format!("{n} is too large")))
            }
            Some(v) => Err(SwitchError::bad_request(
                Some(k),
                format!("must be integer, not {}", type_name(v)),
            )),
        }
    }

    /// Refuses the fields nobody asked for.
    pub fn finish(self) -> Result<(), SwitchError> {
        match self.obj.keys().find(|k| !self.taken.contains(&k.as_str())) {
            Some(k) => {
                let known: Vec<String> = self.taken.iter().map(|t| format!("`{t}`")).collect();
                Err(SwitchError::bad_request(
                    Some(k),
                    format!("unknown field `{k}`, expected one of {}", known.join(", ")),
                ))
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_typed_and_named() {
        let v: Value =
            serde_json::from_str(r#"{"name":"br0","n":5,"big":18446744073709551615,"x":1}"#)
                .unwrap();
        let o = object(&v).unwrap();
        let mut f = Fields::new(o);
        assert_eq!(f.string("name", true).unwrap(), Some("br0"));
        assert_eq!(f.integer("n").unwrap(), Some(5));
        let e = f.integer("big").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("big"));
        assert!(f.string("missing", true).is_err());
        let e = f.finish().unwrap_err();
        assert_eq!(e.field.as_deref(), Some("x"));
        assert!(e.message.contains("unknown field `x`"), "{}", e.message);
        let e = Fields::new(o).integer("name").unwrap_err();
        assert!(e.message.contains("must be integer, not string"), "{}", e.message);
        assert!(object(&Value::Array(vec![])).is_err());
    }
}
