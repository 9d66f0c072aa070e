use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::attrs::{MaxRetries, TaskAttrs};
use super::signature::{Param, TaskSignature};

pub(crate) fn task(
    function: &syn::ItemFn,
    attrs: &TaskAttrs,
    signature: &TaskSignature,
) -> TokenStream {
    let krate = attrs
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::celeriac));
    let ident = &function.sig.ident;
    let vis = &function.vis;
    let name = attrs.name.clone().unwrap_or_else(|| ident.to_string());
    let arg_names: Vec<_> = signature.args.iter().map(|(name, _)| name).collect();
    let arg_types: Vec<_> = signature.args.iter().map(|(_, ty)| ty).collect();
    // As Python names them in keyword arguments (a raw identifier without its `r#`).
    let arg_name_strings: Vec<String> = arg_names
        .iter()
        .map(|name| name.to_string().trim_start_matches("r#").to_owned())
        .collect();
    let output = &signature.output;
    // A return type that is not `Result<T, E>` or `()` is an error at it: every use of it is
    // spanned there.
    let returned = format_ident!("__celeriac_returned");
    let into_result = quote_spanned! {output.span()=>
        <#output as #krate::__private::IntoTaskResult>::into_task_result(#returned)
    };
    let output_type = quote_spanned! {output.span()=>
        <#output as #krate::__private::IntoTaskResult>::Output
    };
    let output_decl = quote_spanned! {output.span()=>
        type Output = #output_type;
    };
    let run_future = quote_spanned! {output.span()=>
        impl ::core::future::Future<
            Output = ::core::result::Result<#output_type, #krate::TaskError>,
        > + ::core::marker::Send
    };
    let options = options(&krate, attrs);
    let unique_key =
        super::arg_keys::method(&krate, "unique_key", attrs.unique.key.as_ref(), signature);
    let rate_limit_key = super::arg_keys::method(
        &krate,
        "rate_limit_key",
        attrs.rate_limit_key.as_ref(),
        signature,
    );
    let ctx = format_ident!("__celeriac_ctx");
    let app = format_ident!("__celeriac_app");
    let state_types: Vec<&syn::Type> = signature
        .params
        .iter()
        .filter_map(|param| match param {
            Param::State(ty) => Some(ty),
            _ => None,
        })
        .collect();
    let state_idents: Vec<_> = (0..state_types.len())
        .map(|index| format_ident!("__celeriac_state_{index}"))
        .collect();
    let mut states = state_idents.iter();
    let call_args: Vec<TokenStream> = signature
        .params
        .iter()
        .map(|param| match param {
            Param::Context => quote!(#ctx),
            Param::State(_) => {
                let ident = states.next();
                quote!(#ident)
            }
            Param::Arg(name) => quote!(#name),
        })
        .collect();
    let call_args = quote!(#(#call_args),*);
    let ignore_ctx = if signature.takes_context {
        quote!()
    } else {
        quote!(let _ = #ctx;)
    };
    let required_state = if state_types.is_empty() {
        quote!()
    } else {
        quote! {
            fn required_state() -> ::std::vec::Vec<#krate::__private::StateRequirement> {
                ::std::vec![#(#krate::__private::StateRequirement::of::<#state_types>()),*]
            }
        }
    };
    let run_body = if function.sig.asyncness.is_some() {
        quote! {
            let #returned = #ident(#call_args).await;
            #into_result
        }
    } else {
        quote! {
            match #krate::__private::run_blocking(move || #ident(#call_args)).await {
                ::core::result::Result::Ok(#returned) => {
                    #into_result
                }
                ::core::result::Result::Err(error) => ::core::result::Result::Err(error),
            }
        }
    };
    // The argument tuple carries the span of the parameter list: an argument type that cannot
    // travel through the broker is then one error there, naming the type (`TaskArgs` is implemented
    // for tuples of `TaskArgument`s, whose own blanket impl is not recommended in diagnostics).
    let args_span = match arg_types.as_slice() {
        [only] => only.span(),
        _ => function.sig.paren_token.span.join(),
    };
    let args_tuple = quote_spanned! {args_span=> (#(#arg_types,)*) };
    // A task with arguments also has a partial signature: every argument but the first, which the
    // previous task's output fills in.
    let partial = match (arg_names.split_first(), arg_types.split_first()) {
        (Some((_, rest_names)), Some((_, rest_types))) => quote! {
            /// This task's signature with every argument but the first, which the previous task's
            /// output fills in: a chain's later step, a chord's callback, a `link`.
            #vis fn partial(#(#rest_names: #rest_types),*) -> #krate::canvas::Partial<Self, (#(#rest_types,)*)> {
                #krate::canvas::Partial::new((#(#rest_names,)*))
            }
        },
        _ => quote!(),
    };

    let type_doc = format!(
        "The task `{name}`, generated by `#[celeriac::task]` from the function `{ident}`. \
         Send it with `{ident}::delay(&app, …)`."
    );

    // The run's future is checked against the task's output type: spanned at the return type.
    let run_block = quote_spanned! {output.span()=>
        async move {
            #(let #state_idents = #state_idents?;)*
            #run_body
        }
    };

    quote! {
        #function

        #[doc = #type_doc]
        #[allow(non_camel_case_types)]
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug, ::core::default::Default)]
        #vis struct #ident {}

        #[allow(clippy::too_many_arguments)]
        impl #ident {
            /// Sends this task: await the returned `Delay` (after chaining options such as
            /// `.countdown(…)` or `.queue(…)` on it) to get the task's id once the broker holds it.
            #vis fn delay(
                #app: &#krate::App,
                #(#arg_names: #arg_types),*
            ) -> #krate::Delay<'_, Self> {
                #app.delay::<Self>((#(#arg_names,)*))
            }

            /// This task's signature with all its arguments, for a workflow (`celeriac::canvas`):
            /// the start of a chain, a group's member, a callback that ignores the previous output.
            #vis fn s(#(#arg_names: #arg_types),*) -> #krate::canvas::Signature<Self> {
                #krate::canvas::Signature::new((#(#arg_names,)*))
            }

            #partial
        }

        const _: () = {
            impl #krate::Task for #ident {
                const NAME: &'static str = #name;
                const ARG_NAMES: &'static [&'static str] = &[#(#arg_name_strings),*];
                type Args = #args_tuple;
                #output_decl

                fn options() -> #krate::TaskOptions {
                    #options
                }

                #required_state

                #unique_key

                #rate_limit_key

                fn run(
                    #ctx: #krate::TaskContext,
                    args: Self::Args,
                ) -> #run_future {
                    let (#(#arg_names,)*) = args;
                    // Spanned at each `State<T>`'s `T`: a `T` that cannot be state is one error there.
                    #(let #state_idents = #krate::__private::extract_state::<#state_types>(&#ctx);)*
                    #ignore_ctx
                    #run_block
                }
            }

            #krate::__private::inventory::submit! {
                #krate::__private::TaskRegistration::new::<#ident>()
            }

        };
    }
}

fn duration(millis: u64) -> TokenStream {
    quote!(::core::time::Duration::from_millis(#millis))
}

fn options(krate: &syn::Path, attrs: &TaskAttrs) -> TokenStream {
    let mut steps = Vec::new();
    if let Some(queue) = &attrs.queue {
        steps.push(quote!(.queue(#queue)));
    }
    if attrs.has_retry_options() {
        let mut policy = if let Some(base) = attrs.retry_backoff {
            let base = duration(base.0);
            quote!(#krate::RetryPolicy::exponential(#base))
        } else if let Some(delay) = attrs.retry_delay {
            let delay = duration(delay.0);
            quote!(#krate::RetryPolicy::fixed(#delay))
        } else {
            quote!(#krate::RetryPolicy::none())
        };
        match attrs.max_retries {
            Some(MaxRetries::Limit(max)) => policy.extend(quote!(.max_retries(#max))),
            Some(MaxRetries::Forever) => policy.extend(quote!(.retry_forever())),
            None => {}
        }
        if let Some(max) = attrs.retry_backoff_max {
            let max = duration(max.0);
            policy.extend(quote!(.max_delay(#max)));
        }
        if let Some(jitter) = attrs.retry_jitter {
            policy.extend(quote!(.jitter(#jitter)));
        }
        steps.push(quote!(.retry(#policy)));
    }
    if let Some(limit) = attrs.time_limit {
        let limit = duration(limit.0);
        steps.push(quote!(.time_limit(#limit)));
    }
    if let Some((count, per_secs)) = attrs.rate_limit {
        steps.push(quote!(.rate_limit(#krate::RateLimit::new(#count, ::core::time::Duration::from_secs(#per_secs)))));
    }
    let scope = match (&attrs.rate_limit_key, &attrs.rate_limit_cluster) {
        (Some(_), _) => Some(quote!(ClusterPerKey)),
        (None, Some((true, _))) => Some(quote!(Cluster)),
        _ => None,
    };
    if let Some(scope) = scope {
        steps.push(quote!(.rate_limit_scope(#krate::RateLimitScope::#scope)));
    }
    if let Some(expires) = attrs.expires {
        let expires = duration(expires.0);
        steps.push(quote!(.expires(#expires)));
    }
    if let Some(priority) = attrs.priority {
        steps.push(quote!(.priority(#priority)));
    }
    if let Some(acks_late) = attrs.acks_late {
        steps.push(quote!(.acks_late(#acks_late)));
    }
    if let Some(ignore_result) = attrs.ignore_result {
        steps.push(quote!(.ignore_result(#ignore_result)));
    }
    if let Some(track_started) = attrs.track_started {
        steps.push(quote!(.track_started(#track_started)));
    }
    steps.extend(super::unique::options_step(krate, &attrs.unique));
    quote!(#krate::TaskOptions::new() #(#steps)*)
}
