//! Content filters per webhook (`filter`): a CEL expression (Common
//! Expression Language) over the event, with the variables `id`,
//! `application_id`, `type`, `timestamp` and `content`. A webhook gets an
//! event only if it subscribes to its type and its filter is true.
//!
//! A filter is checked when it is saved and refused if it cannot run on
//! every event in bounded time: at most [`MAX_FILTER_CHARS`] characters,
//! [`MAX_NODES`] nodes and [`MAX_DEPTH`] levels, at most [`MAX_MACROS`]
//! macros (`all`, `exists`, `exists_one`, `map`, `filter`), none inside
//! another's body (that would be a loop in a loop over the event's lists),
//! only the five variables, and a result that is true or false. It is then compiled once per webhook
//! revision (the subscription cache keeps the programs). On an event, an
//! error (a missing field, a wrong type) makes the filter false for that
//! event; the caller counts it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, Program, Value};

/// The longest filter, in characters.
pub const MAX_FILTER_CHARS: usize = 2_000;
/// Most nodes of a filter's syntax tree (after its macros are expanded).
pub const MAX_NODES: usize = 500;
/// Deepest nesting of a filter's syntax tree.
pub const MAX_DEPTH: usize = 32;
/// Most macros (`all`, `exists`, `exists_one`, `map`, `filter`) in a filter:
/// each is one pass over a list of the event, at most 256 KiB of it.
pub const MAX_MACROS: usize = 4;

/// The variables a filter may use.
pub const VARIABLES: [&str; 5] = ["id", "application_id", "type", "timestamp", "content"];

/// CEL's type names, which a filter may use as identifiers (`type(x) == int`).
const TYPE_NAMES: [&str; 10] = [
    "bool",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// Why a filter was refused, in words for the API's `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(String);

/// A compiled filter.
pub struct Filter {
    program: Program,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Filter")
    }
}

/// The standard CEL environment, built once (it registers every function).
fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

impl Filter {
    /// Compiles and checks `source` (see the module documentation).
    pub fn compile(source: &str) -> Result<Filter, FilterError> {
        let refuse = |why: String| Err(FilterError(why));
        if source.trim().is_empty() {
            return refuse("is empty; set it to null for no filter".into());
        }
        let chars = source.chars().count();
        if chars > MAX_FILTER_CHARS {
            return refuse(format!(
                "is {chars} characters long; at most {MAX_FILTER_CHARS}"
            ));
        }
        // Before the parser, which recurses once per level of brackets.
        let brackets = bracket_depth(source);
        if brackets > MAX_DEPTH {
            return refuse(format!("nests {brackets} levels deep; at most {MAX_DEPTH}"));
        }
        let program = env()
            .compile(source)
            .map_err(|e| FilterError(compile_error(&e)))?;
        let shape = Shape::of(program.expression());
        if shape.nodes > MAX_NODES {
            return refuse(format!(
                "is too large: {} nodes once expanded, at most {MAX_NODES}",
                shape.nodes
            ));
        }
        if shape.depth > MAX_DEPTH {
            return refuse(format!(
                "nests {} levels deep; at most {MAX_DEPTH}",
                shape.depth
            ));
        }
        if shape.macros > MAX_MACROS {
            return refuse(format!(
                "uses {} macros (all, exists, exists_one, map, filter); at most {MAX_MACROS}",
                shape.macros
            ));
        }
        if shape.nested_macro {
            return refuse(
                "uses a macro (all, exists, exists_one, map, filter) inside another's body; \
                 a loop in a loop over an event's lists is not allowed"
                    .into(),
            );
        }
        if let Some(unknown) = shape.free.iter().find(|v| !is_known(v)) {
            return refuse(format!(
                "uses the unknown variable `{unknown}`; the variables are id, application_id, \
                 type, timestamp and content"
            ));
        }
        if let Some(kind) = never_boolean(&program.expression().expr) {
            return refuse(format!("must give true or false; it gives {kind}"));
        }
        let filter = Filter { program };
        filter.probe()?;
        Ok(filter)
    }

    /// Runs the filter on an event without content: a result that is not
    /// true or false, or an error that does not depend on the content (an
    /// unknown function, an operator on the wrong types), is refused.
    fn probe(&self) -> Result<(), FilterError> {
        let probe = Variables::new(
            "evt_probe",
            "app_probe",
            "item.created",
            serde_json::json!(crate::clock::unix_secs()),
            &serde_json::json!({}),
        );
        match self.run(&probe) {
            Ok(Value::Bool(_)) => Ok(()),
            Ok(other) => Err(FilterError(format!(
                "must give true or false; it gives {}",
                kind_of(&other)
            ))),
            Err(e) if depends_on_content(&e) => Ok(()),
            Err(e) => Err(FilterError(format!("cannot run: {e}"))),
        }
    }

    fn run(&self, event: &Variables) -> Result<Value, ExecutionError> {
        let mut context = Context::with_env(env());
        for (name, value) in VARIABLES.iter().zip(&event.values) {
            context.add_variable_from_value(*name, value.clone());
        }
        self.program.execute(&context)
    }

    /// Whether `event` passes; an error (a missing field, a wrong type, a
    /// result that is not a boolean) says why it could not be decided.
    pub fn matches(&self, event: &Variables) -> Result<bool, String> {
        match self.run(event) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("gave {}, not true or false", kind_of(&other))),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The deepest nesting of brackets in `source`, outside string literals.
fn bracket_depth(source: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = source.chars();
    let mut previous = ' ';
    while let Some(c) = chars.next() {
        let raw = matches!(previous, 'r' | 'R');
        previous = c;
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '\'' | '"' => {
                // Skip the literal (escapes included, unless it is raw).
                while let Some(s) = chars.next() {
                    match s {
                        '\\' if !raw => {
                            chars.next();
                        }
                        s if s == c => break,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    deepest
}

/// The first compile error, with where it is.
fn compile_error(errors: &cel::ParseErrors) -> String {
    match errors.errors.first() {
        Some(e) => format!(
            "does not compile: {} (line {}, column {})",
            e.msg,
            e.pos.0,
            e.pos.1 + 1
        ),
        None => "does not compile".into(),
    }
}

/// What `root` gives when that can never be a boolean, whatever the event:
/// arithmetic, a list or map, a literal of another type.
fn never_boolean(root: &Expr) -> Option<&'static str> {
    use cel::common::ast::LiteralValue;
    match root {
        Expr::Call(call) => match call.func_name.as_str() {
            "_+_" | "_-_" | "_*_" | "_/_" | "_%_" | "-_" => Some("a number, a string or a list"),
            _ => None,
        },
        Expr::List(_) => Some("a list"),
        Expr::Map(_) => Some("a map"),
        Expr::Literal(LiteralValue::Boolean(_)) => None,
        Expr::Literal(LiteralValue::String(_)) => Some("a string"),
        Expr::Literal(LiteralValue::Null) => Some("null"),
        Expr::Literal(LiteralValue::Bytes(_)) => Some("bytes"),
        Expr::Literal(_) => Some("a number"),
        _ => None,
    }
}

/// Errors an event's content can cause or cure: not refused at save.
fn depends_on_content(e: &ExecutionError) -> bool {
    matches!(
        e,
        ExecutionError::NoSuchKey(_)
            | ExecutionError::FunctionError { .. }
            | ExecutionError::IndexOutOfBounds(_)
            | ExecutionError::DivisionByZero(_)
            | ExecutionError::RemainderByZero(_)
            | ExecutionError::Overflow(..)
    )
}

fn is_known(name: &str) -> bool {
    VARIABLES.contains(&name) || TYPE_NAMES.contains(&name)
}

/// A value's CEL type, for messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        Value::Int(_) | Value::UInt(_) => "an integer",
        Value::Float(_) => "a double",
        Value::String(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Null => "null",
        _ => "a value of another type",
    }
}

/// The size and reach of a syntax tree.
#[derive(Default)]
struct Shape {
    nodes: usize,
    depth: usize,
    macros: usize,
    nested_macro: bool,
    /// Identifiers not bound by a macro.
    free: Vec<String>,
}

impl Shape {
    fn of(root: &IdedExpr) -> Shape {
        let mut shape = Shape::default();
        shape.walk(root, 1, &mut Vec::new(), false);
        shape
    }

    /// `bound`: the macro variables in scope; `in_loop`: inside a macro's body.
    fn walk(&mut self, e: &IdedExpr, depth: usize, bound: &mut Vec<String>, in_loop: bool) {
        self.nodes += 1;
        self.depth = self.depth.max(depth);
        if self.nodes > MAX_NODES || depth > MAX_DEPTH {
            return;
        }
        let next = depth + 1;
        match &e.expr {
            Expr::Ident(name) => {
                if !bound.contains(name) && !self.free.contains(name) {
                    self.free.push(name.clone());
                }
            }
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.walk(target, next, bound, in_loop);
                }
                for arg in &call.args {
                    self.walk(arg, next, bound, in_loop);
                }
            }
            Expr::Select(select) => self.walk(&select.operand, next, bound, in_loop),
            Expr::List(list) => {
                for element in &list.elements {
                    self.walk(element, next, bound, in_loop);
                }
            }
            Expr::Map(map) => {
                self.entries(map.entries.iter().map(|e| &e.expr), next, bound, in_loop)
            }
            Expr::Struct(s) => {
                self.entries(s.entries.iter().map(|e| &e.expr), next, bound, in_loop)
            }
            Expr::Comprehension(c) => {
                self.macros += 1;
                self.nested_macro |= in_loop;
                self.walk(&c.iter_range, next, bound, in_loop);
                self.walk(&c.accu_init, next, bound, in_loop);
                let before = bound.len();
                bound.push(c.iter_var.clone());
                bound.extend(c.iter_var2.clone());
                bound.push(c.accu_var.clone());
                self.walk(&c.loop_cond, next, bound, true);
                self.walk(&c.loop_step, next, bound, true);
                self.walk(&c.result, next, bound, in_loop);
                bound.truncate(before);
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn entries<'e>(
        &mut self,
        entries: impl Iterator<Item = &'e EntryExpr>,
        depth: usize,
        bound: &mut Vec<String>,
        in_loop: bool,
    ) {
        for entry in entries {
            match entry {
                EntryExpr::MapEntry(m) => {
                    self.walk(&m.key, depth, bound, in_loop);
                    self.walk(&m.value, depth, bound, in_loop);
                }
                EntryExpr::StructField(f) => self.walk(&f.value, depth, bound, in_loop),
            }
        }
    }
}

/// The variables of one event, converted once for every filter of its
/// application.
pub struct Variables {
    /// In the order of [`VARIABLES`].
    values: [Value; 5],
}

impl Variables {
    /// From the parts of an event (`timestamp` and `content` as JSON).
    pub fn new(
        id: &str,
        application_id: &str,
        event_type: &str,
        timestamp: serde_json::Value,
        content: &serde_json::Value,
    ) -> Variables {
        Variables {
            values: [
                Value::from(id),
                Value::from(application_id),
                Value::from(event_type),
                value_of(&timestamp),
                value_of(content),
            ],
        }
    }

    /// From an event's delivery body (`{"content", "timestamp", "type"}`).
    pub fn of_body(id: &str, application_id: &str, event_type: &str, body: &str) -> Variables {
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let timestamp = parsed.get("timestamp").cloned().unwrap_or_default();
        let content = parsed.get("content").cloned().unwrap_or_default();
        Variables::new(id, application_id, event_type, timestamp, &content)
    }
}

/// A JSON value as a CEL value: objects become maps, arrays lists, whole
/// numbers integers.
fn value_of(json: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match json {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::from(s.as_str()),
        J::Array(items) => Value::List(Arc::new(items.iter().map(value_of).collect())),
        J::Object(fields) => {
            let map: HashMap<Key, Value> = fields
                .iter()
                .map(|(k, v)| (Key::from(k.clone()), value_of(v)))
                .collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}

#[cfg(test)]
mod tests;
