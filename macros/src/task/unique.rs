//! The unique-task options: `unique_for`, `unique_key`, `unique_until`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Expr, Lit};

use super::Errors;
use super::arg_keys::{self, ArgNames};
use super::attrs::{Millis, literal};
use super::signature::TaskSignature;

/// `unique_for`, `unique_key` and `unique_until` as given.
#[derive(Default)]
pub(crate) struct UniqueAttrs {
    pub(crate) hold_for: Option<Millis>,
    /// The argument names, with the value they were written in (for errors).
    pub(crate) key: Option<ArgNames>,
    pub(crate) until_executed: Option<(bool, Expr)>,
}

/// `unique_for = "60s"` (any `humantime` duration: `"500ms"`, `"5m"`, `"1h 30m"`) or a number of
/// seconds.
pub(crate) fn hold_for(value: &Expr) -> syn::Result<Millis> {
    let millis = match literal(value) {
        Some(Lit::Str(text)) => {
            let duration = humantime::parse_duration(&text.value()).map_err(|error| {
                syn::Error::new_spanned(
                    value,
                    format!(
                        "invalid `unique_for` duration `{}`: {error} (write e.g. `\"60s\"`, `\"5m\"` or `\"1h 30m\"`)",
                        text.value()
                    ),
                )
            })?;
            u64::try_from(duration.as_millis()).map_err(|_| {
                syn::Error::new_spanned(value, "task option `unique_for` is out of range")
            })?
        }
        _ => super::attrs::positive_seconds(value, "unique_for")?.0,
    };
    if millis == 0 {
        return Err(syn::Error::new_spanned(
            value,
            "task option `unique_for` must be at least one millisecond",
        ));
    }
    Ok(Millis(millis))
}

/// `unique_until = "executed"` (released when the task has run) or `"expired"` (the default).
pub(crate) fn until(value: &Expr) -> syn::Result<(bool, Expr)> {
    match literal(value) {
        Some(Lit::Str(text)) if text.value() == "executed" => Ok((true, value.clone())),
        Some(Lit::Str(text)) if text.value() == "expired" => Ok((false, value.clone())),
        _ => Err(syn::Error::new_spanned(
            value,
            "task option `unique_until` expects `\"executed\"` (free once the task has run) or `\"expired\"` (free when the window ends, the default)",
        )),
    }
}

/// Checks the options against each other and against the function's arguments.
pub(crate) fn check(unique: &UniqueAttrs, signature: &TaskSignature, errors: &mut Errors) {
    if unique.hold_for.is_none() {
        if let Some((_, value)) = &unique.key {
            errors.spanned(
                value,
                "`unique_key` only applies together with `unique_for`",
            );
        }
        if let Some((_, value)) = &unique.until_executed {
            errors.spanned(
                value,
                "`unique_until` only applies together with `unique_for`",
            );
        }
    }
    if let Some(key) = &unique.key {
        arg_keys::check(key, "unique_key", signature, errors);
    }
}

/// The `.unique(…)` step of the task's options.
pub(crate) fn options_step(krate: &syn::Path, unique: &UniqueAttrs) -> Option<TokenStream> {
    let millis = unique.hold_for?.0;
    let until = match unique.until_executed {
        Some((true, _)) => quote!(.until_executed()),
        _ => quote!(),
    };
    Some(quote! {
        .unique(#krate::task::Unique::new(::core::time::Duration::from_millis(#millis)) #until)
    })
}
