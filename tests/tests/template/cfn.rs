//! Just enough CloudFormation to check `template.yaml`: the YAML with its short-form tags
//! (`!Ref`, `!Sub`, `!GetAtt`, `!If`, ...) read into one shape, and values evaluated the way
//! CloudFormation would for given parameters, so a test can ask "what does the connect
//! function's environment hold when JwtAlgorithm is RS256?".

use std::collections::{BTreeMap, BTreeSet};

use serde_norway::{Mapping, Value};

/// An intrinsic function call, whichever of YAML's two spellings the template used
/// (`!Ref X` or `Ref: X`, `!If [...]` or `Fn::If: [...]`).
pub struct Call<'a> {
    /// `Ref`, `Condition`, or the part after `Fn::` (`Sub`, `GetAtt`, `If`, ...).
    pub name: String,
    pub argument: &'a Value,
}

pub fn call(value: &Value) -> Option<Call<'_>> {
    match value {
        Value::Tagged(tagged) => Some(Call {
            name: tagged.tag.to_string().trim_start_matches('!').to_owned(),
            argument: &tagged.value,
        }),
        Value::Mapping(map) if map.len() == 1 => {
            let (key, argument) = map.iter().next()?;
            let key = key.as_str()?;
            let name = key.strip_prefix("Fn::").unwrap_or(key);
            (key.starts_with("Fn::") || key == "Ref" || key == "Condition").then(|| Call {
                name: name.to_owned(),
                argument,
            })
        }
        _ => None,
    }
}

/// `!Ref NAME`: the name.
pub fn ref_name(value: &Value) -> Option<&str> {
    call(value).filter(|c| c.name == "Ref")?.argument.as_str()
}

/// `!GetAtt RESOURCE.ATTRIBUTE` (either spelling): the resource and the attribute.
pub fn get_att(value: &Value) -> Option<(String, String)> {
    let call = call(value).filter(|c| c.name == "GetAtt")?;
    match call.argument {
        Value::String(dotted) => {
            let (resource, attribute) = dotted.split_once('.')?;
            Some((resource.to_owned(), attribute.to_owned()))
        }
        Value::Sequence(parts) if parts.len() == 2 => {
            Some((parts[0].as_str()?.to_owned(), parts[1].as_str()?.to_owned()))
        }
        _ => None,
    }
}

/// `!Sub "..."`: the template string.
pub fn sub_text(value: &Value) -> Option<&str> {
    call(value).filter(|c| c.name == "Sub")?.argument.as_str()
}

/// Every `${NAME}` in a `!Sub` string.
pub fn sub_names(text: &str) -> Vec<&str> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect()
}

pub struct Template {
    pub doc: Value,
}

impl Template {
    pub fn parse(text: &str) -> Self {
        let doc: Value = serde_norway::from_str(text)
            .unwrap_or_else(|e| panic!("template.yaml is not valid YAML: {e}"));
        Self { doc }
    }

    pub fn section(&self, name: &str) -> &Mapping {
        self.doc
            .get(name)
            .and_then(Value::as_mapping)
            .unwrap_or_else(|| panic!("template.yaml has no {name} section"))
    }

    /// Logical id and properties of each resource of `resource_type`, in template order.
    pub fn resources_of(&self, resource_type: &str) -> Vec<(&str, &Value)> {
        self.section("Resources")
            .iter()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(resource_type))
            .map(|(id, r)| {
                (
                    id.as_str().expect("logical ids are strings"),
                    r.get("Properties").unwrap_or(&Value::Null),
                )
            })
            .collect()
    }

    pub fn resource(&self, id: &str) -> &Value {
        self.section("Resources")
            .get(id)
            .unwrap_or_else(|| panic!("template.yaml has no resource {id}"))
    }

    pub fn properties(&self, id: &str) -> &Value {
        self.resource(id)
            .get("Properties")
            .unwrap_or_else(|| panic!("{id} has no Properties"))
    }

    /// Parameter defaults, with `overrides` on top, as CloudFormation would see them.
    pub fn parameters(&self, overrides: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut values: BTreeMap<String, String> = self
            .section("Parameters")
            .iter()
            .map(|(name, spec)| {
                let name = name
                    .as_str()
                    .expect("parameter names are strings")
                    .to_owned();
                let default = spec.get("Default").map(scalar).unwrap_or_default();
                (name, default)
            })
            .collect();
        for (name, value) in overrides {
            assert!(
                values.contains_key(*name),
                "the test overrides parameter {name}, which template.yaml does not declare"
            );
            values.insert((*name).to_owned(), (*value).to_owned());
        }
        values
    }

    /// Environment variable names a function declares, itself or through Globals, under any
    /// condition: the names `sam local invoke --env-vars` may set.
    pub fn declared_environment(&self, function: &str) -> BTreeSet<String> {
        self.environment_entries(function)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// The environment a deployed function gets for these parameter values: conditions
    /// decided, `AWS::NoValue` entries gone, references to resources as `<Name>` or
    /// `<Name.Attribute>`, dynamic references (`{{resolve:...}}`) left as written.
    pub fn environment(
        &self,
        function: &str,
        parameters: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        self.environment_entries(function)
            .into_iter()
            .filter_map(|(name, value)| Some((name, self.evaluate(value, parameters)?)))
            .collect()
    }

    fn environment_entries(&self, function: &str) -> Vec<(String, &Value)> {
        let global = self
            .doc
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(|f| f.get("Environment"))
            .and_then(|e| e.get("Variables"))
            .and_then(Value::as_mapping);
        let own = self
            .properties(function)
            .get("Environment")
            .and_then(|e| e.get("Variables"))
            .and_then(Value::as_mapping);
        let mut entries: BTreeMap<String, &Value> = BTreeMap::new();
        // A function's own variable wins over a global one of the same name, as in SAM.
        for map in [global, own].into_iter().flatten() {
            for (name, value) in map {
                entries.insert(
                    name.as_str()
                        .expect("variable names are strings")
                        .to_owned(),
                    value,
                );
            }
        }
        entries.into_iter().collect()
    }

    /// The value CloudFormation would produce; `None` for `AWS::NoValue`.
    pub fn evaluate(&self, value: &Value, parameters: &BTreeMap<String, String>) -> Option<String> {
        let Some(call) = call(value) else {
            return Some(scalar(value));
        };
        let argument = call.argument;
        match call.name.as_str() {
            "Ref" => {
                let name = argument.as_str().expect("!Ref takes a name");
                match name {
                    "AWS::NoValue" => None,
                    _ => Some(
                        parameters
                            .get(name)
                            .cloned()
                            .unwrap_or_else(|| format!("<{name}>")),
                    ),
                }
            }
            "GetAtt" => {
                let (resource, attribute) = get_att(value).expect("!GetAtt RESOURCE.ATTRIBUTE");
                Some(format!("<{resource}.{attribute}>"))
            }
            "Sub" => {
                let text = argument
                    .as_str()
                    .expect("only the one-argument !Sub is used");
                let mut out = text.to_owned();
                for name in sub_names(text) {
                    let replacement = parameters
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| format!("<{name}>"));
                    out = out.replace(&format!("${{{name}}}"), &replacement);
                }
                Some(out)
            }
            "If" => {
                let [condition, then, otherwise] = branches(argument);
                let condition = condition.as_str().expect("!If names a condition");
                if self.condition(condition, parameters) {
                    self.evaluate(then, parameters)
                } else {
                    self.evaluate(otherwise, parameters)
                }
            }
            "Select" => {
                let [index, list] = pair(argument, "Fn::Select takes [index, list]");
                let index: usize = scalar(index).parse().expect("Fn::Select's index");
                self.evaluate_list(list, parameters).get(index).cloned()
            }
            other => panic!("the test cannot evaluate Fn::{other}; teach cfn.rs"),
        }
    }

    /// A list value: `!Split [separator, value]` or a YAML sequence.
    fn evaluate_list(&self, value: &Value, parameters: &BTreeMap<String, String>) -> Vec<String> {
        match call(value) {
            Some(call) if call.name == "Split" => {
                let [separator, text] = pair(call.argument, "Fn::Split takes [separator, value]");
                let text = self.evaluate(text, parameters).unwrap_or_default();
                text.split(scalar(separator).as_str())
                    .map(str::to_owned)
                    .collect()
            }
            Some(call) => panic!("the test cannot evaluate a list from Fn::{}", call.name),
            None => value
                .as_sequence()
                .expect("a list")
                .iter()
                .filter_map(|item| self.evaluate(item, parameters))
                .collect(),
        }
    }

    /// The YAML a value stands for with these parameters: `!If` decided (recursively), `None`
    /// for `AWS::NoValue`, anything else as written. For structured values, such as an IAM
    /// statement that only some parameter values grant.
    pub fn choose<'v>(
        &self,
        value: &'v Value,
        parameters: &BTreeMap<String, String>,
    ) -> Option<&'v Value> {
        match call(value) {
            Some(call) if call.name == "If" => {
                let [condition, then, otherwise] = branches(call.argument);
                let condition = condition.as_str().expect("!If names a condition");
                if self.condition(condition, parameters) {
                    self.choose(then, parameters)
                } else {
                    self.choose(otherwise, parameters)
                }
            }
            _ if ref_name(value) == Some("AWS::NoValue") => None,
            _ => Some(value),
        }
    }

    /// The `Rules` whose assertions fail for these parameter values, as their descriptions:
    /// CloudFormation refuses such a deployment before it starts.
    pub fn broken_rules(&self, parameters: &BTreeMap<String, String>) -> Vec<String> {
        let Some(rules) = self.doc.get("Rules").and_then(Value::as_mapping) else {
            return Vec::new();
        };
        let mut broken = Vec::new();
        for (name, rule) in rules {
            let applies = rule
                .get("RuleCondition")
                .is_none_or(|condition| self.holds(condition, parameters));
            if !applies {
                continue;
            }
            let assertions = rule["Assertions"]
                .as_sequence()
                .expect("Assertions: a list");
            for assertion in assertions {
                if !self.holds(&assertion["Assert"], parameters) {
                    broken.push(format!(
                        "{}: {}",
                        scalar(name),
                        assertion
                            .get("AssertDescription")
                            .map(scalar)
                            .unwrap_or_default()
                    ));
                }
            }
        }
        broken
    }

    /// Whether the named condition holds for these parameter values.
    pub fn condition(&self, name: &str, parameters: &BTreeMap<String, String>) -> bool {
        let definition = self
            .section("Conditions")
            .get(name)
            .unwrap_or_else(|| panic!("template.yaml has no condition {name}"));
        self.holds(definition, parameters)
    }

    fn holds(&self, expression: &Value, parameters: &BTreeMap<String, String>) -> bool {
        let call = call(expression).expect("a condition is a function");
        let arguments = call.argument.as_sequence();
        match call.name.as_str() {
            "Equals" => {
                let pair = arguments.expect("Fn::Equals takes two values");
                self.evaluate(&pair[0], parameters) == self.evaluate(&pair[1], parameters)
            }
            "Not" => !self.holds(&arguments.expect("Fn::Not takes a list")[0], parameters),
            "And" => arguments
                .expect("Fn::And takes a list")
                .iter()
                .all(|c| self.holds(c, parameters)),
            "Or" => arguments
                .expect("Fn::Or takes a list")
                .iter()
                .any(|c| self.holds(c, parameters)),
            "Condition" => self.condition(call.argument.as_str().expect("a name"), parameters),
            other => panic!("the test cannot evaluate condition Fn::{other}; teach cfn.rs"),
        }
    }
}

fn pair<'v>(argument: &'v Value, usage: &str) -> [&'v Value; 2] {
    match argument.as_sequence().map(Vec::as_slice) {
        Some([first, second]) => [first, second],
        _ => panic!("{usage}"),
    }
}

fn branches(argument: &Value) -> [&Value; 3] {
    match argument.as_sequence().map(Vec::as_slice) {
        Some([condition, then, otherwise]) => [condition, then, otherwise],
        _ => panic!("!If takes [condition, then, else]"),
    }
}

/// A plain YAML scalar as CloudFormation reads it: a string.
pub fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

/// A list of strings, or one string, as IAM's `Action`/`Resource` allow.
pub fn one_or_many(value: &Value) -> Vec<&Value> {
    match value {
        Value::Sequence(items) => items.iter().collect(),
        single => vec![single],
    }
}
