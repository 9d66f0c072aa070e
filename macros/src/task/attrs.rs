use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Lit, Meta, Token};

use super::Errors;
use super::unique::{self, UniqueAttrs};

const OPTIONS: &[&str] = &[
    "name",
    "queue",
    "max_retries",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "retry_delay",
    "time_limit",
    "rate_limit",
    "rate_limit_scope",
    "rate_limit_key",
    "expires",
    "priority",
    "acks_late",
    "ignore_result",
    "track_started",
    "unique_for",
    "unique_key",
    "unique_until",
    "crate",
];

/// A duration given in seconds, kept as whole milliseconds.
#[derive(Clone, Copy)]
pub(crate) struct Millis(pub(crate) u64);

/// Retry limit: a number, or `None` for "forever".
#[derive(Clone, Copy)]
pub(crate) enum MaxRetries {
    Limit(u32),
    Forever,
}

#[derive(Default)]
pub(crate) struct TaskAttrs {
    pub(crate) name: Option<String>,
    pub(crate) queue: Option<String>,
    pub(crate) max_retries: Option<MaxRetries>,
    pub(crate) retry_backoff: Option<Millis>,
    pub(crate) retry_backoff_max: Option<Millis>,
    pub(crate) retry_jitter: Option<bool>,
    pub(crate) retry_delay: Option<Millis>,
    pub(crate) time_limit: Option<Millis>,
    pub(crate) rate_limit: Option<(u32, u64)>,
    /// `rate_limit_scope = "cluster"` (`true`) or `"worker"` (`false`), with its value for errors.
    pub(crate) rate_limit_cluster: Option<(bool, Expr)>,
    pub(crate) rate_limit_key: Option<super::arg_keys::ArgNames>,
    pub(crate) expires: Option<Millis>,
    pub(crate) priority: Option<u8>,
    pub(crate) acks_late: Option<bool>,
    pub(crate) ignore_result: Option<bool>,
    pub(crate) track_started: Option<bool>,
    pub(crate) unique: UniqueAttrs,
    pub(crate) krate: Option<syn::Path>,
}

impl TaskAttrs {
    /// Whether any retry option was given.
    pub(crate) fn has_retry_options(&self) -> bool {
        self.max_retries.is_some()
            || self.retry_backoff.is_some()
            || self.retry_delay.is_some()
            || self.retry_backoff_max.is_some()
            || self.retry_jitter.is_some()
    }
}

pub(crate) fn parse(attr: TokenStream, errors: &mut Errors) -> TaskAttrs {
    let mut attrs = TaskAttrs::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr) {
        Ok(metas) => metas,
        Err(error) => {
            errors.push(error);
            return attrs;
        }
    };
    // Each option given, with its key's span, so errors about combinations point at an option.
    let mut seen: Vec<(String, Span)> = Vec::new();
    for meta in metas {
        let Some(key) = meta.path().get_ident().map(ToString::to_string) else {
            errors.spanned(
                meta.path(),
                unknown_option_message(&quote::quote!(#meta).to_string()),
            );
            continue;
        };
        if !OPTIONS.contains(&key.as_str()) {
            errors.spanned(meta.path(), unknown_option_message(&key));
            continue;
        }
        if seen.iter().any(|(earlier, _)| *earlier == key) {
            errors.spanned(meta.path(), format!("duplicate task option `{key}`"));
            continue;
        }
        seen.push((key.clone(), meta.path().span()));
        let value = match &meta {
            Meta::NameValue(name_value) => &name_value.value,
            _ => {
                errors.spanned(
                    &meta,
                    format!("task option `{key}` needs a value: `{key} = …`"),
                );
                continue;
            }
        };
        if let Err(error) = apply(&mut attrs, &key, value) {
            errors.push(error);
        }
    }
    check_combinations(&attrs, &seen, errors);
    attrs
}

fn unknown_option_message(key: &str) -> String {
    format!(
        "unknown task option `{key}`; expected one of: {}",
        OPTIONS.join(", ")
    )
}

fn apply(attrs: &mut TaskAttrs, key: &str, value: &Expr) -> syn::Result<()> {
    match key {
        "name" => {
            let name = string(value, key)?;
            if name.trim().is_empty() {
                return Err(syn::Error::new_spanned(
                    value,
                    "the task name must not be empty",
                ));
            }
            attrs.name = Some(name);
        }
        "queue" => {
            let queue = string(value, key)?;
            if queue.is_empty() {
                return Err(syn::Error::new_spanned(
                    value,
                    "the queue name must not be empty",
                ));
            }
            attrs.queue = Some(queue);
        }
        "max_retries" => {
            attrs.max_retries = Some(if is_none(value) {
                MaxRetries::Forever
            } else {
                MaxRetries::Limit(int(value, key)?)
            });
        }
        "retry_backoff" => {
            attrs.retry_backoff = match literal(value) {
                Some(Lit::Bool(flag)) if flag.value => Some(Millis(1000)),
                Some(Lit::Bool(_)) => None,
                _ => Some(positive_seconds(value, key)?),
            };
        }
        "retry_backoff_max" => attrs.retry_backoff_max = Some(positive_seconds(value, key)?),
        "retry_jitter" => attrs.retry_jitter = Some(boolean(value, key)?),
        "retry_delay" => attrs.retry_delay = Some(seconds(value, key)?),
        "time_limit" => attrs.time_limit = Some(positive_seconds(value, key)?),
        "expires" => attrs.expires = Some(positive_seconds(value, key)?),
        "rate_limit" => attrs.rate_limit = Some(rate_limit(value)?),
        "rate_limit_scope" => {
            let cluster = match literal(value) {
                Some(Lit::Str(text)) if text.value() == "cluster" => true,
                Some(Lit::Str(text)) if text.value() == "worker" => false,
                _ => {
                    return Err(syn::Error::new_spanned(
                        value,
                        "task option `rate_limit_scope` expects `\"worker\"` (each worker on its own, the default) or `\"cluster\"` (one budget shared by every worker)",
                    ));
                }
            };
            attrs.rate_limit_cluster = Some((cluster, value.clone()));
        }
        "rate_limit_key" => attrs.rate_limit_key = Some(super::arg_keys::parse(value, key)?),
        "priority" => {
            let priority: u8 = int(value, key)?;
            if priority > 9 {
                return Err(syn::Error::new_spanned(
                    value,
                    "priority must be between 0 and 9",
                ));
            }
            attrs.priority = Some(priority);
        }
        "acks_late" => attrs.acks_late = Some(boolean(value, key)?),
        "ignore_result" => attrs.ignore_result = Some(boolean(value, key)?),
        "track_started" => attrs.track_started = Some(boolean(value, key)?),
        "unique_for" => attrs.unique.hold_for = Some(unique::hold_for(value)?),
        "unique_key" => attrs.unique.key = Some(super::arg_keys::parse(value, key)?),
        "unique_until" => attrs.unique.until_executed = Some(unique::until(value)?),
        "crate" => {
            let path = string(value, key)?;
            let path = syn::parse_str::<syn::Path>(&path).map_err(|_| {
                syn::Error::new_spanned(value, format!("`{path}` is not a path, e.g. `::celeriac`"))
            })?;
            attrs.krate = Some(path);
        }
        _ => unreachable!("every option in OPTIONS is handled"),
    }
    Ok(())
}

fn check_combinations(attrs: &TaskAttrs, seen: &[(String, Span)], errors: &mut Errors) {
    let find = |key: &str| seen.iter().position(|(k, _)| k == key);
    if let (Some(backoff), Some(delay)) = (find("retry_backoff"), find("retry_delay")) {
        // At whichever of the two was written second: that one conflicts with the first.
        let (first, second) = if backoff < delay {
            ("retry_backoff", delay)
        } else {
            ("retry_delay", backoff)
        };
        errors.push(syn::Error::new(
            seen[second].1,
            format!(
                "`{}` conflicts with `{first}`: choose exponential (`retry_backoff`) or fixed (`retry_delay`) delays",
                seen[second].0
            ),
        ));
    }
    for dependent in ["rate_limit_scope", "rate_limit_key"] {
        if let Some(index) = find(dependent)
            && attrs.rate_limit.is_none()
        {
            errors.push(syn::Error::new(
                seen[index].1,
                format!("`{dependent}` only applies together with `rate_limit`"),
            ));
        }
    }
    if let (Some((false, value)), Some(_)) = (&attrs.rate_limit_cluster, &attrs.rate_limit_key) {
        errors.spanned(
            value,
            "`rate_limit_key` keeps one budget per key across the cluster: it cannot be `rate_limit_scope = \"worker\"`",
        );
    }
    for dependent in ["retry_backoff_max", "retry_jitter"] {
        if let Some(index) = find(dependent)
            && attrs.retry_backoff.is_none()
        {
            errors.push(syn::Error::new(
                seen[index].1,
                format!("`{dependent}` only applies together with `retry_backoff`"),
            ));
        }
    }
}

pub(crate) fn literal(value: &Expr) -> Option<&Lit> {
    match value {
        Expr::Lit(expr) => Some(&expr.lit),
        Expr::Group(group) => literal(&group.expr),
        _ => None,
    }
}

fn is_none(value: &Expr) -> bool {
    matches!(value, Expr::Path(path) if path.path.is_ident("None"))
}

fn string(value: &Expr, key: &str) -> syn::Result<String> {
    match literal(value) {
        Some(Lit::Str(lit)) => Ok(lit.value()),
        _ => Err(syn::Error::new_spanned(
            value,
            format!("task option `{key}` expects a string literal"),
        )),
    }
}

fn boolean(value: &Expr, key: &str) -> syn::Result<bool> {
    match literal(value) {
        Some(Lit::Bool(lit)) => Ok(lit.value),
        _ => Err(syn::Error::new_spanned(
            value,
            format!("task option `{key}` expects `true` or `false`"),
        )),
    }
}

fn int<N>(value: &Expr, key: &str) -> syn::Result<N>
where
    N: std::str::FromStr,
    N::Err: std::fmt::Display,
{
    match literal(value) {
        Some(Lit::Int(lit)) => lit.base10_parse().map_err(|error| {
            syn::Error::new_spanned(value, format!("task option `{key}`: {error}"))
        }),
        _ => Err(syn::Error::new_spanned(
            value,
            format!("task option `{key}` expects a non-negative integer"),
        )),
    }
}

fn seconds(value: &Expr, key: &str) -> syn::Result<Millis> {
    let secs: f64 = match literal(value) {
        Some(Lit::Int(lit)) => lit.base10_parse::<u64>().map(|n| n as f64),
        Some(Lit::Float(lit)) => lit.base10_parse::<f64>(),
        _ => {
            return Err(syn::Error::new_spanned(
                value,
                format!("task option `{key}` expects a number of seconds, e.g. `{key} = 3`"),
            ));
        }
    }
    .map_err(|error| syn::Error::new_spanned(value, format!("task option `{key}`: {error}")))?;
    let millis = (secs * 1000.0).round();
    if !millis.is_finite() || millis < 0.0 || millis > u64::MAX as f64 {
        return Err(syn::Error::new(
            value.span(),
            format!("task option `{key}` is out of range"),
        ));
    }
    Ok(Millis(millis as u64))
}

pub(crate) fn positive_seconds(value: &Expr, key: &str) -> syn::Result<Millis> {
    let millis = seconds(value, key)?;
    if millis.0 == 0 {
        return Err(syn::Error::new_spanned(
            value,
            format!("task option `{key}` must be greater than zero"),
        ));
    }
    Ok(millis)
}

fn rate_limit(value: &Expr) -> syn::Result<(u32, u64)> {
    let text = string(value, "rate_limit")?;
    let invalid = || {
        syn::Error::new_spanned(
            value,
            format!("invalid rate limit `{text}`: expected `N/s`, `N/m` or `N/h` with N > 0"),
        )
    };
    let (count, unit) = text.split_once('/').ok_or_else(invalid)?;
    let count: u32 = count.trim().parse().map_err(|_| invalid())?;
    let per_secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(invalid()),
    };
    if count == 0 {
        return Err(invalid());
    }
    Ok((count, per_secs))
}
