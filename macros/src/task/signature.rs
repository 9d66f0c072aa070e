use syn::{FnArg, Pat, ReturnType, Type};

use super::Errors;

/// One parameter of the task function, in order.
pub(crate) enum Param {
    /// The `TaskContext` (first, if present).
    Context,
    /// A `State<T>` parameter: `T` is the state type.
    State(Type),
    /// A task argument, decoded from the message.
    Arg(syn::Ident),
}

/// What the expansion needs to know about the task function.
pub(crate) struct TaskSignature {
    /// The first parameter is a `TaskContext`.
    pub(crate) takes_context: bool,
    /// Every parameter, in order.
    pub(crate) params: Vec<Param>,
    /// The task arguments (neither context nor state), with plain names.
    pub(crate) args: Vec<(syn::Ident, Type)>,
    /// The return type (`()` when none is written).
    pub(crate) output: Type,
}

/// Whether a return type is written as `()` or as a path ending in `Result` (`Result<T, E>`,
/// `io::Result<T>`, `anyhow::Result<T>`, an alias such as `SendResult`). Anything else cannot carry a
/// failure; it is refused here, with one error at the type, instead of by trait bounds later.
fn returns_result_or_unit(ty: &Type) -> bool {
    match ty {
        Type::Tuple(tuple) => tuple.elems.is_empty(),
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident.to_string().ends_with("Result")),
        Type::Group(group) => returns_result_or_unit(&group.elem),
        Type::Paren(paren) => returns_result_or_unit(&paren.elem),
        _ => false,
    }
}

/// A `State` written without its type.
fn is_bare_state(ty: &Type) -> bool {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().is_some_and(|segment| {
                segment.ident == "State" && matches!(segment.arguments, syn::PathArguments::None)
            })
        }
        Type::Group(group) => is_bare_state(&group.elem),
        _ => false,
    }
}

/// `T` of a `State<T>` parameter type.
fn state_type(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            let segment = path.path.segments.last()?;
            if segment.ident != "State" {
                return None;
            }
            match &segment.arguments {
                syn::PathArguments::AngleBracketed(generic) if generic.args.len() == 1 => {
                    match generic.args.first()? {
                        syn::GenericArgument::Type(inner) => Some(inner),
                        _ => None,
                    }
                }
                _ => None,
            }
        }
        Type::Group(group) => state_type(&group.elem),
        _ => None,
    }
}

fn is_context(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "TaskContext"),
        Type::Group(group) => is_context(&group.elem),
        _ => false,
    }
}

pub(crate) fn check(function: &syn::ItemFn, errors: &mut Errors) -> TaskSignature {
    let sig = &function.sig;
    if let Some(constness) = &sig.constness {
        errors.spanned(constness, "a task function cannot be `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.spanned(unsafety, "a task function cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, "a task function cannot have an `extern` ABI");
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "a task function cannot be variadic");
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            "a task function cannot be generic: its argument types must be known to decode messages",
        );
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.spanned(where_clause, "a task function cannot have a `where` clause");
    }

    let mut takes_context = false;
    let mut params = Vec::new();
    let mut args = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        let typed = match input {
            FnArg::Receiver(receiver) => {
                errors.spanned(
                    receiver,
                    "a task function cannot take `self`: write a free function",
                );
                continue;
            }
            FnArg::Typed(typed) => typed,
        };
        if let Some(state) = state_type(&typed.ty) {
            params.push(Param::State(state.clone()));
            continue;
        }
        if is_bare_state(&typed.ty) {
            errors.spanned(
                &typed.ty,
                "`State` needs the type of the state it takes: `State<Gateway>` (the app is given \
                 one with `App::builder().state(…)`)",
            );
            continue;
        }
        if is_context(&typed.ty) {
            if index == 0 {
                takes_context = true;
                params.push(Param::Context);
            } else {
                errors.spanned(
                    &typed.ty,
                    "`TaskContext` must be the first parameter of a task function",
                );
            }
            continue;
        }
        match &*typed.ty {
            Type::Reference(reference) if is_context(&reference.elem) => errors.spanned(
                reference,
                "take the context by value, `ctx: TaskContext`, not by reference: each run owns its \
                 context (it is cheap to clone)",
            ),
            Type::Reference(reference) if state_type(&reference.elem).is_some() => errors.spanned(
                reference,
                "take state by value, `State(x): State<T>`, not by reference: each run gets a clone",
            ),
            Type::Reference(reference) => errors.spanned(
                reference,
                "task arguments must be owned values (e.g. `String`, not `&str`): they are decoded from a message",
            ),
            Type::ImplTrait(impl_trait) => errors.spanned(
                impl_trait,
                "task arguments cannot be `impl Trait`: use a concrete, serializable type",
            ),
            _ => {}
        }
        match &*typed.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                params.push(Param::Arg(pat.ident.clone()));
                args.push((pat.ident.clone(), (*typed.ty).clone()));
            }
            other => errors.spanned(
                other,
                "task arguments must be plain names (`mobile: String`), not patterns",
            ),
        }
    }

    let output = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => {
            if let Type::ImplTrait(impl_trait) = &**ty {
                errors.spanned(
                    impl_trait,
                    "a task function cannot return `impl Trait`: return `Result<T, E>` or nothing",
                );
            } else if !returns_result_or_unit(ty) {
                errors.spanned(
                    ty,
                    format!(
                        "a task returns `Result<T, E>` (any error type) or nothing, so that it can \
                         fail and be retried: return `Result<{}, E>`",
                        quote::quote!(#ty)
                    ),
                );
            }
            (**ty).clone()
        }
    };

    TaskSignature {
        takes_context,
        params,
        args,
        output,
    }
}
