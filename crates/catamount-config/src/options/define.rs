//! The machinery behind the `options!` table in `options/mod.rs`: what one definition is made
//! of (DSL methods, flags, fields, doc, default, example), the macro that turns the table into
//! `Layer`, `Options`, `resolve`, `Options::export` and `DEFINITIONS`, and the helpers entries
//! use. Nothing here names an option; adding one is an entry in the table only.

use std::time::Duration;

use super::{Environment, Layer, Value};
use crate::bind::BindUrl;

/// Applies one DSL method's arguments to a layer; errors start with the method's name.
pub type Setter = fn(&mut Layer, &str, &[Value]) -> Result<(), String>;

/// A method that sets an option, by its DSL name.
#[derive(Debug)]
pub struct Method {
    pub name: &'static str,
    /// False for names only flags use (`redirect_stdout` for `--redirect-stdout`): Puma's DSL
    /// has no such method, so config files cannot call it either.
    pub dsl: bool,
    pub set: Setter,
}

/// Whether a flag takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagArg {
    None,
    /// `--flag VALUE` or `--flag=VALUE` (`-xVALUE` for short flags).
    Required,
    /// Only as `--flag=VALUE` / `-xVALUE`: a following word is never taken, so
    /// `-f config.ru` keeps `config.ru` as the rackup file.
    OptionalInline,
}

/// A command-line flag: which method it calls, and with what arguments.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub long: &'static str,
    pub short: Option<char>,
    pub arg: FlagArg,
    /// The method (in the same definition) the flag calls.
    pub method: &'static str,
    /// The method's arguments, from the flag's value.
    pub args: fn(Option<&str>) -> Vec<Value>,
    /// `--help`: the value's name (`MIN:MAX`) and what the flag does. A flag without help text
    /// is not listed (`--no-x` is shown as `--[no-]x` on its twin's line).
    pub metavar: &'static str,
    pub help: &'static str,
}

impl Flag {
    /// `--long VALUE`: the method gets the value as a String.
    pub const fn value(long: &'static str, method: &'static str) -> Flag {
        Flag {
            long,
            short: None,
            arg: FlagArg::Required,
            method,
            args: text,
            metavar: "",
            help: "",
        }
    }

    /// `--long`: the method is called without arguments.
    pub const fn switch(long: &'static str, method: &'static str) -> Flag {
        Flag {
            long,
            short: None,
            arg: FlagArg::None,
            method,
            args: no_args,
            metavar: "",
            help: "",
        }
    }

    /// `--long` or `--long=VALUE`.
    pub const fn optional(long: &'static str, method: &'static str) -> Flag {
        Flag {
            long,
            short: None,
            arg: FlagArg::OptionalInline,
            method,
            args: maybe_text,
            metavar: "",
            help: "",
        }
    }

    pub const fn short(self, letter: char) -> Flag {
        Flag {
            short: Some(letter),
            ..self
        }
    }

    /// Turns the flag's text into the method's arguments, when the method wants more than the
    /// text as one String: `-t 2:8` calls `threads 2, 8` (`min_max`), `--no-x` calls `x false`.
    pub const fn with(self, args: fn(Option<&str>) -> Vec<Value>) -> Flag {
        Flag { args, ..self }
    }

    /// Its `--help` line: the value's name (empty for a switch) and what it does.
    pub const fn help(self, metavar: &'static str, help: &'static str) -> Flag {
        Flag {
            metavar,
            help,
            ..self
        }
    }

    /// How messages and the docs name it: `-t/--threads`.
    pub fn display(&self) -> String {
        match self.short {
            Some(c) => format!("-{c}/--{}", self.long),
            None => format!("--{}", self.long),
        }
    }
}

fn text(v: Option<&str>) -> Vec<Value> {
    vec![Value::Str(v.unwrap_or_default().to_string())]
}

fn no_args(_: Option<&str>) -> Vec<Value> {
    Vec::new()
}

fn maybe_text(v: Option<&str>) -> Vec<Value> {
    v.map(|v| vec![Value::Str(v.to_string())])
        .unwrap_or_default()
}

/// One option as users see it: a row of docs/configuration.md.
#[derive(Debug)]
pub struct Definition {
    pub name: &'static str,
    /// One line: what it does.
    pub doc: &'static str,
    /// The default, in words (environment variables it reads included).
    pub default: &'static str,
    /// A config-file line using it (empty when only the environment sets it).
    pub example: &'static str,
    pub methods: &'static [Method],
    pub flags: &'static [Flag],
    /// The `Layer`/`Options` fields it fills.
    pub fields: &'static [&'static str],
}

/// What a field's default may look at: the layers, and the environment.
pub struct Sources<'a, 'e> {
    pub user: &'a Layer,
    pub file: &'a Layer,
    pub env: &'a Environment<'e>,
    /// Whether checks between options run (a value that must exceed another's): not while a
    /// config file is half read (its `get`), where a later line may still set the other one.
    pub cross_checks: bool,
}

impl Sources<'_, '_> {
    /// An environment variable, unless unset or blank.
    pub fn var(&self, name: &str) -> Option<String> {
        (self.env.var)(name).filter(|v| !v.trim().is_empty())
    }

    /// The first of `names` that is set, as a whole number.
    pub fn count_var(&self, names: &[&str]) -> Result<Option<u32>, String> {
        for name in names {
            if let Some(v) = self.var(name) {
                return v.trim().parse::<u32>().map(Some).map_err(|_| {
                    format!("environment variable {name}={v:?} is not a whole number")
                });
            }
        }
        Ok(None)
    }

    /// An environment-only choice: the value of `choices` named by the variable `name` (trimmed),
    /// the first one when it is unset or blank, else an error naming the variable and every
    /// choice (`... is not "a", "b" or "c"`).
    pub fn choice_var<T: Copy>(&self, name: &str, choices: &[(&str, T)]) -> Result<T, String> {
        let Some(v) = self.var(name) else {
            return choices
                .first()
                .map(|&(_, value)| value)
                .ok_or_else(|| format!("environment variable {name}: no choices"));
        };
        if let Some(&(_, value)) = choices.iter().find(|(word, _)| *word == v.trim()) {
            return Ok(value);
        }
        let words: Vec<String> = choices
            .iter()
            .map(|(word, _)| format!("{word:?}"))
            .collect();
        let listed = match words.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => words.join(""),
        };
        Err(format!("environment variable {name}={v:?} is not {listed}"))
    }
}

/// The layer type of a field only the environment sets (`thread_handoff`): no value exists,
/// so neither a flag nor a config file can set it and its resolve only reads `Sources::env`.
pub type EnvironmentOnly = std::convert::Infallible;

/// The layers' value, else `default`.
pub fn or<T>(default: T) -> impl FnOnce(Option<T>, &Sources<'_, '_>) -> Result<T, String> {
    move |v, _| Ok(v.unwrap_or(default))
}

/// The layers' value, else none.
pub fn or_none<T>() -> impl FnOnce(Option<T>, &Sources<'_, '_>) -> Result<Option<T>, String> {
    |v, _| Ok(v)
}

/// Gives the table's resolve expressions their argument types.
pub fn resolve_field<L, V>(
    how: impl FnOnce(Option<L>, &Sources<'_, '_>) -> Result<V, String>,
    given: Option<L>,
    sources: &Sources<'_, '_>,
) -> Result<V, String> {
    how(given, sources)
}

/// How a resolved field appears in `Options::export` (Puma's option keys, for Ruby).
pub type Export<V> = fn(&'static str, &V) -> Vec<(&'static str, Value)>;

pub fn export_with<V>(f: Export<V>) -> Export<V> {
    f
}

/// Under the field's own name.
pub fn same<V: ToValue>(key: &'static str, v: &V) -> Vec<(&'static str, Value)> {
    vec![(key, v.to_value())]
}

/// Not exported (internal, or not a Puma option).
pub fn hidden<V>(_: &'static str, _: &V) -> Vec<(&'static str, Value)> {
    Vec::new()
}

/// A resolved value as Ruby sees it in `Catamount.config.options`.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
}

impl ToValue for u32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for u64 {
    fn to_value(&self) -> Value {
        i64::try_from(*self)
            .map(Value::Int)
            .unwrap_or(Value::Float(*self as f64))
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Str(self.clone())
    }
}

impl ToValue for Duration {
    fn to_value(&self) -> Value {
        Value::Float(self.as_secs_f64())
    }
}

impl ToValue for BindUrl {
    fn to_value(&self) -> Value {
        Value::Str(self.original.clone())
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Nil, ToValue::to_value)
    }
}

impl<T: ToValue> ToValue for Vec<T> {
    fn to_value(&self) -> Value {
        Value::Array(self.iter().map(ToValue::to_value).collect())
    }
}

/// `set!(field, parse)`: a [`Setter`] storing `parse(name, args)?` in the layer's `field`.
macro_rules! set {
    ($field:ident, $parse:expr) => {
        |layer, name, args| {
            layer.$field = Some(($parse)(name, args)?);
            Ok(())
        }
    };
}

/// `named!("key")`: exports a field under a Puma key that is not its own name.
macro_rules! named {
    ($key:literal) => {
        |_, v| vec![($key, $crate::options::ToValue::to_value(v))]
    };
}

macro_rules! dsl_method {
    () => {
        true
    };
    (flag_only) => {
        false
    };
}

/// The table: each entry is one option (a docs row) with its methods, flags and fields. Each
/// field is `name: LayerType => OptionsType = how_to_resolve, how_to_export;`, resolved in
/// table order, so a field's default may use fields above it by name.
macro_rules! options {
    (
        $(
            $row:ident {
                doc: $doc:literal,
                default: $default:literal,
                example: $example:literal,
                methods: [
                    $( $method:literal $( ($only:ident) )? => $setter:expr ),*
                    $(,)?
                ],
                flags: [ $( $flag:expr ),* $(,)? ],
                fields: {
                    $(
                        $(#[$meta:meta])*
                        $field:ident : $layer_ty:ty => $value_ty:ty = $resolve:expr, $export:expr;
                    )+
                } $(,)?
            }
        )*
    ) => {
        /// One layer of settings (the command line, or the config files); `None` means "this
        /// layer does not say". Fields are documented in the `options!` table.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct Layer {
            $( $( #[doc = $doc] $(#[$meta])* pub $field: Option<$layer_ty>, )+ )*
        }

        /// The options the server runs with, after layering and defaults.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Options {
            $( $( #[doc = $doc] $(#[$meta])* pub $field: $value_ty, )+ )*
        }

        /// Every option, in the order of docs/configuration.md's table.
        pub static DEFINITIONS: &[$crate::options::Definition] = &[
            $(
                $crate::options::Definition {
                    name: stringify!($row),
                    doc: $doc,
                    default: $default,
                    example: $example,
                    methods: &[
                        $(
                            $crate::options::Method {
                                name: $method,
                                dsl: dsl_method!($($only)?),
                                set: $setter,
                            },
                        )*
                    ],
                    flags: &[ $( $flag, )* ],
                    fields: &[ $( stringify!($field), )+ ],
                },
            )*
        ];

        /// Combines the layers: `user` over `file` over defaults.
        pub fn resolve(
            user: &Layer,
            file: &Layer,
            env: &$crate::options::Environment<'_>,
        ) -> Result<Options, String> {
            resolve_checking(user, file, env, true)
        }

        /// [`resolve`], with the checks between options (`cross_checks`) or without them.
        fn resolve_checking(
            user: &Layer,
            file: &Layer,
            env: &$crate::options::Environment<'_>,
            cross_checks: bool,
        ) -> Result<Options, String> {
            let sources = $crate::options::define::Sources { user, file, env, cross_checks };
            $( $(
                let $field = $crate::options::define::resolve_field::<$layer_ty, $value_ty>(
                    $resolve,
                    user.$field.clone().or_else(|| file.$field.clone()),
                    &sources,
                )?;
            )+ )*
            Ok(Options { $( $( $field, )+ )* })
        }

        impl Layer {
            /// The fields this layer sets, in table order.
            pub fn given_fields(&self) -> Vec<&'static str> {
                let mut given = Vec::new();
                $( $(
                    if self.$field.is_some() {
                        given.push(stringify!($field));
                    }
                )+ )*
                given
            }
        }

        impl Options {
            /// One field (by name) under Puma's key or keys, as plain values; nothing for a
            /// hidden or unknown field.
            pub fn export_field(&self, field: &str) -> Vec<(&'static str, $crate::options::Value)> {
                match field {
                    $( $(
                        stringify!($field) => $crate::options::define::export_with::<$value_ty>(
                            $export,
                        )(stringify!($field), &self.$field),
                    )+ )*
                    _ => Vec::new(),
                }
            }
        }
    };
}
