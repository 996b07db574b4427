//! Label and field selectors as the API server evaluates them (`docs/simulator.md#selectors`).

use crate::errors::ApiError;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed `labelSelector` query string. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<LabelReq>);

/// Tokens of apimachinery's label selector lexer (`labels/selector.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Ident,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn symbol(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_special(c: char) -> bool {
    "=!(),><".contains(c)
}

/// The lexer, token by token (`Lexer.Lex`).
fn lex(s: &str) -> Vec<(Tok, String)> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < chars.len() && " \t\r\n".contains(chars[i]) {
            i += 1;
        }
        if i >= chars.len() {
            out.push((Tok::End, String::new()));
            return out;
        }
        if is_special(chars[i]) {
            // Longest run of special characters that is still a token.
            let mut buf = String::new();
            let mut last: Option<(Tok, String)> = None;
            while i < chars.len() && is_special(chars[i]) {
                buf.push(chars[i]);
                match symbol(&buf) {
                    Some(t) => last = Some((t, buf.clone())),
                    None if last.is_some() => break,
                    None => {}
                }
                i += 1;
            }
            match last {
                Some(t) => out.push(t),
                None => {
                    out.push((Tok::Error, format!("error expected: keyword found '{buf}'")));
                    out.push((Tok::End, String::new()));
                    return out;
                }
            }
        } else {
            let start = i;
            while i < chars.len() && !is_special(chars[i]) && !" \t\r\n".contains(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let tok = match word.as_str() {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Ident,
            };
            out.push((tok, word));
        }
    }
}

/// apimachinery's label selector parser, with its error texts.
struct Parser {
    toks: Vec<(Tok, String)>,
    pos: usize,
}

impl Parser {
    /// `lookahead(Values)`: in a value position `in` and `notin` are identifiers.
    fn peek(&self, values: bool) -> (Tok, String) {
        let (t, l) = self
            .toks
            .get(self.pos)
            .cloned()
            .unwrap_or((Tok::End, String::new()));
        if values && matches!(t, Tok::In | Tok::NotIn) {
            (Tok::Ident, l)
        } else {
            (t, l)
        }
    }

    fn next(&mut self, values: bool) -> (Tok, String) {
        let t = self.peek(values);
        self.pos = (self.pos + 1).min(self.toks.len());
        t
    }

    fn parse(&mut self) -> Result<Vec<LabelReq>, String> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.peek(true);
            match tok {
                Tok::Ident | Tok::DoesNotExist => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.next(true);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.peek(true);
                            if t2 != Tok::Ident && t2 != Tok::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<LabelReq, String> {
        let (mut tok, mut key) = self.next(true);
        let not = tok == Tok::DoesNotExist;
        if not {
            (tok, key) = self.next(true);
        }
        if tok != Tok::Ident {
            return Err(format!("found '{key}', expected: identifier"));
        }
        let (t, _) = self.peek(true);
        if not || t == Tok::End || t == Tok::Comma {
            return Ok(if not {
                LabelReq::NotExists(key)
            } else {
                LabelReq::Exists(key)
            });
        }
        let (op, lit) = self.next(false);
        match op {
            Tok::In | Tok::NotIn => {
                let values = self.values()?;
                Ok(if op == Tok::In {
                    LabelReq::In(key, values)
                } else {
                    LabelReq::NotIn(key, values)
                })
            }
            Tok::Equals | Tok::DoubleEquals | Tok::NotEquals => {
                let v = self.exact_value()?;
                Ok(if op == Tok::NotEquals {
                    LabelReq::NotEq(key, v)
                } else {
                    LabelReq::Eq(key, v)
                })
            }
            Tok::GreaterThan | Tok::LessThan => {
                let v = self.exact_value()?;
                let n: i64 = v.parse().map_err(|_| {
                    format!("values[0]: Invalid value: \"{v}\": for 'Gt', 'Lt' operators, the value must be an integer")
                })?;
                Ok(if op == Tok::GreaterThan {
                    LabelReq::Gt(key, n)
                } else {
                    LabelReq::Lt(key, n)
                })
            }
            _ => Err(format!(
                "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
            )),
        }
    }

    fn values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.next(true);
        if tok != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.peek(true);
        match tok {
            Tok::Ident | Tok::Comma => {
                let s = self.identifiers()?;
                if self.next(true).0 != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Tok::ClosedPar => {
                self.next(true);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn identifiers(&mut self) -> Result<Vec<String>, String> {
        let mut s: Vec<String> = Vec::new();
        let insert = |s: &mut Vec<String>, v: String| {
            if !s.contains(&v) {
                s.push(v);
            }
        };
        loop {
            let (tok, lit) = self.next(true);
            match tok {
                Tok::Ident => {
                    insert(&mut s, lit);
                    let (t2, l2) = self.peek(true);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(s),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if s.is_empty() {
                        insert(&mut s, String::new());
                    }
                    match self.peek(true).0 {
                        Tok::ClosedPar => {
                            insert(&mut s, String::new());
                            return Ok(s);
                        }
                        Tok::Comma => {
                            self.next(true);
                            insert(&mut s, String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn exact_value(&mut self) -> Result<String, String> {
        let (tok, _) = self.peek(true);
        if tok == Tok::End || tok == Tok::Comma {
            return Ok(String::new());
        }
        let (tok, lit) = self.next(true);
        if tok == Tok::Ident {
            Ok(lit)
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

impl LabelSelector {
    /// Parses the query-string form (`app=web,tier in (a,b),!canary`) the way apimachinery's
    /// `labels.Parse` does, refusing what it refuses with its messages.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut p = Parser {
            toks: lex(s),
            pos: 0,
        };
        if let Some((_, msg)) = p.toks.iter().find(|(t, _)| *t == Tok::Error) {
            // The lexer's error surfaces as the token the parser trips over.
            let msg = msg.clone();
            return match p.parse() {
                Err(e) => Err(ApiError::bad_request(e)),
                Ok(_) => Err(ApiError::bad_request(msg)),
            };
        }
        p.parse().map(LabelSelector).map_err(ApiError::bad_request)
    }

    /// Whether labels (a JSON object or null) satisfy every requirement.
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        let int = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::Gt(k, n) => int(k).is_some_and(|x| x > *n),
            LabelReq::Lt(k, n) => int(k).is_some_and(|x| x < *n),
        })
    }
}

/// A parsed `fieldSelector`: `=`, `==`, `!=`, comma = AND, empty values allowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses and checks the field names the resource supports.
    pub fn parse(s: &str, storage: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, negate, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, false, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !supported(storage, field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push((field.to_string(), negate, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the object satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, negate, want)| {
            let have = field_value(obj, field);
            (have == *want) != *negate
        })
    }

    /// The value required for `field` with `=`, if any (used to narrow a scan).
    pub fn equals(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, negate, _)| f == field && !negate)
            .map(|(_, _, v)| v.as_str())
    }
}

fn supported(storage: &str, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match storage {
        "pods" => matches!(
            field,
            "spec.nodeName"
                | "status.phase"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "spec.hostNetwork"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        "nodes" => field == "spec.unschedulable",
        "events" => matches!(
            field,
            "involvedObject.kind"
                | "involvedObject.namespace"
                | "involvedObject.name"
                | "involvedObject.uid"
                | "involvedObject.apiVersion"
                | "involvedObject.resourceVersion"
                | "involvedObject.fieldPath"
                | "reason"
                | "source"
                | "type"
                | "reportingComponent"
                | "regarding.kind"
                | "regarding.namespace"
                | "regarding.name"
                | "regarding.uid"
                | "reportingController"
        ),
        _ => false,
    }
}

/// The string value of a selectable field; absent fields read as "" (booleans as "true"/"false").
fn field_value(obj: &Value, field: &str) -> String {
    let path: Vec<&str> = match field {
        // core/v1 field names over events stored in events.k8s.io/v1 shape.
        "involvedObject.kind" => vec!["regarding", "kind"],
        "involvedObject.namespace" => vec!["regarding", "namespace"],
        "involvedObject.name" => vec!["regarding", "name"],
        "involvedObject.uid" => vec!["regarding", "uid"],
        "involvedObject.apiVersion" => vec!["regarding", "apiVersion"],
        "involvedObject.resourceVersion" => vec!["regarding", "resourceVersion"],
        "involvedObject.fieldPath" => vec!["regarding", "fieldPath"],
        "source" => vec!["deprecatedSource", "component"],
        "reportingComponent" => vec!["reportingController"],
        other => other.split('.').collect(),
    };
    let mut cur = obj;
    for p in path {
        cur = &cur[p];
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // The real server reports an unset boolean as "false" (e.g. spec.unschedulable).
        Value::Null if field == "spec.unschedulable" || field == "spec.hostNetwork" => {
            "false".into()
        }
        _ => String::new(),
    }
}

/// Whether a `metav1.LabelSelector` object (PDB, ReplicaSet `spec.selector`) matches labels.
/// `empty_matches_all` distinguishes workload selectors from PDB selectors: for eviction
/// purposes an empty PDB selector matches no pod (`docs/simulator.md#selectors`).
pub fn selector_object_matches(selector: &Value, labels: &Value, empty_matches_all: bool) -> bool {
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let exprs = selector.get("matchExpressions").and_then(Value::as_array);
    let empty = match_labels.is_none_or(|m| m.is_empty()) && exprs.is_none_or(|e| e.is_empty());
    if empty {
        return empty_matches_all;
    }
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(ml) = match_labels {
        for (k, v) in ml {
            if get(k) != v.as_str() {
                return false;
            }
        }
    }
    if let Some(exprs) = exprs {
        for e in exprs {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|vs| vs.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let have = get(key);
            let ok = match e["operator"].as_str().unwrap_or("") {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => have.is_none_or(|h| !values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_supports_every_operator() {
        let labels = json!({"app": "web", "tier": "front"});
        let m = |s: &str| {
            LabelSelector::parse(s)
                .map(|l| l.matches(&labels))
                .unwrap_or(false)
        };
        assert!(m("app=web"));
        assert!(m("app==web,tier=front"));
        assert!(!m("app!=web"));
        assert!(m("tier in (front,back)"));
        assert!(!m("tier notin (front,back)"));
        assert!(m("app"));
        assert!(m("!canary"));
        assert!(m("canary!=yes"));
        assert!(m("canary notin (yes)"));
        assert!(m(""));
    }

    #[test]
    fn field_selector_handles_not_equal_and_empty_values() {
        let pod = json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let sel = FieldSelector::parse(
            "spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed",
            "pods",
        );
        assert!(sel.is_ok_and(|s| s.matches(&pod)));
        let ev = json!({"regarding": {"kind": "Node", "name": "n1"}});
        let sel = FieldSelector::parse(
            "involvedObject.name=n1,involvedObject.namespace=,involvedObject.kind=Node",
            "events",
        );
        assert!(sel.is_ok_and(|s| s.matches(&ev)));
    }

    #[test]
    fn unsupported_field_is_bad_request() {
        let err = FieldSelector::parse("spec.foo=x", "pods").err();
        assert_eq!(
            err.map(|e| e.message),
            Some("field label not supported: spec.foo".to_string())
        );
    }

    #[test]
    fn empty_pdb_selector_matches_nothing() {
        assert!(!selector_object_matches(
            &json!({}),
            &json!({"a": "b"}),
            false
        ));
        assert!(selector_object_matches(
            &json!({"matchLabels": {"a": "b"}}),
            &json!({"a": "b"}),
            false
        ));
        let expr =
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x", "b"]}]});
        assert!(selector_object_matches(&expr, &json!({"a": "b"}), false));
    }
}
