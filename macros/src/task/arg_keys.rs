//! Options that name some of a task's arguments — `unique_key`, `rate_limit_key` — and the
//! `Task` method each generates: a digest of those arguments.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{Expr, Lit};

use super::Errors;
use super::attrs::literal;
use super::signature::TaskSignature;

/// The argument names an option gave, with the value they were written in (for errors).
pub(crate) type ArgNames = (Vec<String>, Expr);

/// `option = "mobile"` or `option = ["mobile", "template"]`.
pub(crate) fn parse(value: &Expr, option: &str) -> syn::Result<ArgNames> {
    let expected = || {
        syn::Error::new_spanned(
            value,
            format!(
                "task option `{option}` expects an argument name or a list of them: `{option} = \"mobile\"` or `{option} = [\"mobile\", \"template\"]`"
            ),
        )
    };
    let names = match value {
        Expr::Array(array) => array
            .elems
            .iter()
            .map(|element| match literal(element) {
                Some(Lit::Str(name)) => Ok(name.value()),
                _ => Err(expected()),
            })
            .collect::<syn::Result<Vec<_>>>()?,
        _ => match literal(value) {
            Some(Lit::Str(name)) => vec![name.value()],
            _ => return Err(expected()),
        },
    };
    if names.is_empty() {
        return Err(expected());
    }
    Ok((names, value.clone()))
}

/// Checks that each name is an argument of the task, named once.
pub(crate) fn check(
    (names, value): &ArgNames,
    option: &str,
    signature: &TaskSignature,
    errors: &mut Errors,
) {
    let arguments: Vec<String> = signature
        .args
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    for (index, name) in names.iter().enumerate() {
        if names[..index].contains(name) {
            errors.spanned(value, format!("`{option}` names `{name}` twice"));
        }
        if !arguments.contains(name) {
            errors.spanned(
                value,
                format!(
                    "`{option}` names `{name}`, which is not an argument of the task; its arguments are: {}",
                    if arguments.is_empty() { "none".to_owned() } else { arguments.join(", ") }
                ),
            );
        }
    }
}

/// The `Task` method `method` (`unique_key`, `rate_limit_key`) when an option names some
/// arguments: the digest covers those, in the order written.
pub(crate) fn method(
    krate: &syn::Path,
    method: &str,
    names: Option<&ArgNames>,
    signature: &TaskSignature,
) -> TokenStream {
    let Some((names, _)) = names else {
        return quote!();
    };
    let method = format_ident!("{method}");
    let pattern = signature.args.iter().map(|(name, _)| {
        if names.iter().any(|wanted| name == wanted) {
            quote!(#name)
        } else {
            quote!(_)
        }
    });
    // The names as the function spells them (`check` made sure each is one of its arguments).
    let chosen = names.iter().filter_map(|wanted| {
        signature
            .args
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(name, _)| name)
    });
    quote! {
        fn #method(
            args: &Self::Args,
        ) -> ::core::result::Result<#krate::task::ArgsKey, #krate::codec::CodecError> {
            let (#(#pattern,)*) = args;
            #krate::task::ArgsKey::of(&(#(#chosen,)*))
        }
    }
}
