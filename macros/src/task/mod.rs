mod arg_keys;
mod attrs;
mod expand;
mod signature;
mod unique;

use proc_macro2::TokenStream;

/// Collects every error found, so the user sees them all at once (serde's `Ctxt` habit).
#[derive(Default)]
pub(crate) struct Errors {
    errors: Option<syn::Error>,
}

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.errors {
            Some(errors) => errors.combine(error),
            None => self.errors = Some(error),
        }
    }

    pub(crate) fn spanned(
        &mut self,
        tokens: impl quote::ToTokens,
        message: impl std::fmt::Display,
    ) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn finish(self) -> Result<(), syn::Error> {
        self.errors.map_or(Ok(()), Err)
    }
}

/// Parses, checks and expands; on error, still emits the user's function (so the rest of the crate and
/// the IDE keep working) followed by the errors.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new_spanned(
                &item,
                "#[celeriac::task] applies to a function: `async fn name(args…) -> Result<T, E>`",
            );
            let mut out = item;
            out.extend(error.into_compile_error());
            return out;
        }
    };
    let mut errors = Errors::default();
    let options = attrs::parse(attr, &mut errors);
    let signature = signature::check(&function, &mut errors);
    unique::check(&options.unique, &signature, &mut errors);
    if let Some(key) = &options.rate_limit_key {
        arg_keys::check(key, "rate_limit_key", &signature, &mut errors);
    }
    match errors.finish() {
        Ok(()) => expand::task(&function, &options, &signature),
        Err(error) => {
            let mut out = quote::quote!(#function);
            out.extend(error.into_compile_error());
            out
        }
    }
}
