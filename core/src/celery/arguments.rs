//! Celery's `args` and `kwargs` bound to a task's parameters, as Python binds a call.

use serde_json::Value;

use super::CeleryError;
use crate::codec::CodecError;

/// From `[args, kwargs]` (JSON, as [`ARGS_CONTENT_TYPE`](super::ARGS_CONTENT_TYPE) says), the
/// JSON array of the task's arguments in order: positional ones first, then keyword ones by the
/// parameter `names`. A task without names takes positional arguments only.
pub(crate) fn bind(celery_args: &[u8], names: &[&str]) -> Result<Vec<u8>, CodecError> {
    bind_values(celery_args, names)
        .and_then(|bound| {
            serde_json::to_vec(&bound).map_err(|error| CeleryError::Arguments(error.to_string()))
        })
        .map_err(CeleryError::decoding)
}

fn bind_values(celery_args: &[u8], names: &[&str]) -> Result<Vec<Value>, CeleryError> {
    let (args, kwargs): (Vec<Value>, serde_json::Map<String, Value>) =
        serde_json::from_slice(celery_args)
            .map_err(|error| CeleryError::Arguments(format!("not `[args, kwargs]`: {error}")))?;
    if names.is_empty() {
        if let Some(name) = kwargs.keys().next() {
            return Err(CeleryError::Arguments(format!(
                "unexpected keyword argument `{name}`: this task takes positional arguments only"
            )));
        }
        return Ok(args);
    }
    if args.len() > names.len() {
        return Err(CeleryError::Arguments(format!(
            "the task takes {} argument(s) ({}) but {} were given by position",
            names.len(),
            names.join(", "),
            args.len()
        )));
    }
    let mut bound: Vec<Option<Value>> = args.into_iter().map(Some).collect();
    bound.resize(names.len(), None);
    for (name, value) in kwargs {
        let Some(index) = names.iter().position(|known| *known == name) else {
            return Err(CeleryError::Arguments(format!(
                "unexpected keyword argument `{name}` (the task's are {})",
                names.join(", ")
            )));
        };
        if bound[index].is_some() {
            return Err(CeleryError::Arguments(format!(
                "argument `{name}` given by position and by keyword"
            )));
        }
        bound[index] = Some(value);
    }
    bound
        .into_iter()
        .zip(names)
        .map(|(value, name)| {
            value.ok_or_else(|| CeleryError::Arguments(format!("missing argument `{name}`")))
        })
        .collect()
}

/// `error`, from decoding `bound` (what [`bind`] made) as the task's argument types, with the
/// argument it is about named: `argument `mobile`: invalid type: integer …`. Errors that point at
/// no argument are returned as they are.
pub(crate) fn name_the_argument(bound: &[u8], names: &[&str], error: CodecError) -> CodecError {
    let CodecError::Decode { source, .. } = &error else {
        return error;
    };
    // serde_json's message ends `at line 1 column N` (it reaches us through erased_serde, as text).
    let text = source.to_string();
    let Some((message, column)) = text
        .rsplit_once(" at line 1 column ")
        .and_then(|(message, column)| Some((message.to_owned(), column.parse::<usize>().ok()?)))
    else {
        return error;
    };
    let Ok(values) = serde_json::from_slice::<Vec<Value>>(bound) else {
        return error;
    };
    // `bound` is `[v0,v1,…]`, compact. serde_json's column is that of the last byte it read: in a
    // value it rejects, or the separator before one it rejects on sight (`[`, `{`).
    let at = column.saturating_sub(1);
    let mut end = 0;
    let position = values.iter().position(|value| {
        end += 1 + serde_json::to_vec(value).map_or(0, |text| text.len());
        at < end
    });
    let Some(name) = position.and_then(|position| names.get(position)) else {
        return error;
    };
    CeleryError::Arguments(format!("argument `{name}`: {message}")).decoding()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(args: &str, names: &[&str]) -> Result<String, String> {
        bind(args.as_bytes(), names)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|error| crate::error::Report(&error).to_string())
    }

    #[test]
    fn arguments_bind_by_position_then_by_name() {
        let names = ["mobile", "code"];
        assert_eq!(
            bound(r#"[["13800000000", "123456"], {}]"#, &names),
            Ok(r#"["13800000000","123456"]"#.into())
        );
        assert_eq!(
            bound(
                r#"[[], {"code": "123456", "mobile": "13800000000"}]"#,
                &names
            ),
            Ok(r#"["13800000000","123456"]"#.into())
        );
        assert_eq!(
            bound(r#"[["13800000000"], {"code": "123456"}]"#, &names),
            Ok(r#"["13800000000","123456"]"#.into())
        );
        // Positional only, when the task has no names.
        assert_eq!(bound(r#"[[1, 2], {}]"#, &[]), Ok("[1,2]".into()));
    }

    #[test]
    fn arguments_that_do_not_fit_say_which() {
        let names = ["mobile", "code"];
        let cases = [
            (r#"[["m"], {}]"#, "missing argument `code`"),
            (r#"[["m", "c", "x"], {}]"#, "takes 2 argument(s)"),
            (
                r#"[["m", "c"], {"mobile": "m"}]"#,
                "`mobile` given by position and by keyword",
            ),
            (
                r#"[["m", "c"], {"colour": "red"}]"#,
                "unexpected keyword argument `colour`",
            ),
            (r#"{"args": []}"#, "not `[args, kwargs]`"),
            (r#"[[1], []]"#, "not `[args, kwargs]`"),
        ];
        for (args, expected) in cases {
            let error = bound(args, &names).err().unwrap_or_default();
            assert!(error.contains(expected), "{args}: {error}");
        }
        let error = bound(r#"[[], {"a": 1}]"#, &[]).err().unwrap_or_default();
        assert!(error.contains("positional arguments only"), "{error}");
    }

    #[test]
    fn a_mistyped_argument_is_named() {
        use crate::codec::CodecExt;
        let names = ["mobile", "code", "attempt"];
        let json = crate::codec::JsonCodec::new();
        let limits = crate::codec::DecodeLimits::default();
        let cases = [
            (
                r#"[[13800000000, "123456", 1], {}]"#,
                "argument `mobile`: invalid type: integer",
            ),
            (
                r#"[["m", ["1", "2"], 1], {}]"#,
                "argument `code`: invalid type: sequence",
            ),
            (
                r#"[["m", "c"], {"attempt": "one"}]"#,
                "argument `attempt`: invalid type: string",
            ),
        ];
        for (args, expected) in cases {
            let bound = bind(args.as_bytes(), &names).unwrap();
            let error = json
                .decode::<(String, String, u32)>(&bound, &limits)
                .unwrap_err();
            let error = name_the_argument(&bound, &names, error);
            let text = crate::error::Report(&error).to_string();
            assert!(text.contains(expected), "{args}: {text}");
            assert!(!text.contains("column"), "{text}");
        }
    }
}
